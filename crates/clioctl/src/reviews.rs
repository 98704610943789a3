//! `clioctl review ...`: the quarterly access review (generate, show, attest, export).
//! Every command needs tokens.compliance.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use proto::audit::v1 as audit;
use serde_json::{Value, json};

use crate::clients::{Clients, Target};
use crate::output::{self, Format, Table};
use crate::reports::ComplianceClient;

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Generate the quarterly access review of a tenant: one item per live connection.
    #[command(
        after_help = "Example:\n  clioctl review generate --tenant firm-1 --year 2026 --quarter 1"
    )]
    Generate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        year: u32,
        /// 1 to 4.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4))]
        quarter: u32,
    },
    /// Show a review and its items.
    #[command(after_help = "Example:\n  clioctl review show 5d0e... --unreviewed-only")]
    Show {
        /// The review id `review generate` printed.
        review: String,
        /// Only items nobody has decided yet.
        #[arg(long)]
        unreviewed_only: bool,
    },
    /// Record your keep/revoke decision on one connection of a review. The credential that
    /// generated the review may not attest it.
    #[command(after_help = "Example:
  clioctl review attest 5d0e... --connection 3f2c... --decision revoke --note \"left the firm\"")]
    Attest {
        review: String,
        #[arg(long)]
        connection: String,
        #[arg(long, value_enum)]
        decision: Decision,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Export a review for the auditors (CSV or JSON).
    #[command(after_help = "Example:\n  clioctl review export 5d0e... --format csv --out q1.csv")]
    Export {
        review: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Decision {
    Keep,
    Revoke,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

pub async fn review(
    clients: &Clients,
    format: Format,
    command: ReviewCommand,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.compliance()?;
    let (client, target) = (&mut client, &target);
    match command {
        ReviewCommand::Generate {
            tenant,
            year,
            quarter,
        } => generate_review(client, target, format, tenant, year, quarter).await,
        ReviewCommand::Show {
            review,
            unreviewed_only,
        } => show_review(client, target, format, review, unreviewed_only).await,
        ReviewCommand::Attest {
            review,
            connection,
            decision,
            note,
        } => attest_review(client, target, format, review, connection, decision, note).await,
        ReviewCommand::Export {
            review,
            format: export_format,
            out,
        } => export_review(client, target, review, export_format, out).await,
    }
}

async fn generate_review(
    client: &mut ComplianceClient,
    target: &Target,
    format: Format,
    tenant: String,
    year: u32,
    quarter: u32,
) -> anyhow::Result<()> {
    let review = target
        .call(
            "GenerateQuarterlyReview",
            client.generate_quarterly_review(audit::GenerateQuarterlyReviewRequest {
                tenant,
                year,
                quarter,
            }),
        )
        .await?;
    print_review(&review, format)
}

async fn show_review(
    client: &mut ComplianceClient,
    target: &Target,
    format: Format,
    review: String,
    unreviewed_only: bool,
) -> anyhow::Result<()> {
    let review = target
        .call(
            "GetQuarterlyReview",
            client.get_quarterly_review(audit::GetQuarterlyReviewRequest {
                review_id: review,
                unreviewed_only,
            }),
        )
        .await?;
    print_review(&review, format)
}

async fn attest_review(
    client: &mut ComplianceClient,
    target: &Target,
    format: Format,
    review: String,
    connection: String,
    decision: Decision,
    note: String,
) -> anyhow::Result<()> {
    let decision = match decision {
        Decision::Keep => audit::ReviewDecision::Keep,
        Decision::Revoke => audit::ReviewDecision::Revoke,
    };
    let item = target
        .call(
            "AttestReview",
            client.attest_review(audit::AttestReviewRequest {
                review_id: review,
                connection_id: connection,
                decision: decision as i32,
                reviewer: String::new(),
                note,
            }),
        )
        .await?;
    let mut table = Table::new(&ITEM_COLUMNS);
    table.row(item_cells(&item));
    table.print_one(format)
}

async fn export_review(
    client: &mut ComplianceClient,
    target: &Target,
    review: String,
    export_format: ExportFormat,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let export_format = match export_format {
        ExportFormat::Csv => audit::ExportFormat::Csv,
        ExportFormat::Json => audit::ExportFormat::Json,
    };
    let stream = target
        .call(
            "ExportQuarterlyReview",
            client.export_quarterly_review(audit::ExportQuarterlyReviewRequest {
                review_id: review,
                format: export_format as i32,
            }),
        )
        .await?;
    crate::audit::write_chunks(stream, target, "ExportQuarterlyReview", out).await
}

const ITEM_COLUMNS: [&str; 9] = [
    "connection_id",
    "principal",
    "app_id",
    "risk_tier",
    "grant_age_days",
    "decision",
    "reviewer",
    "action",
    "note",
];

fn item_cells(item: &audit::ReviewItem) -> Vec<Value> {
    let c = item.connection.clone().unwrap_or_default();
    vec![
        json!(c.connection_id),
        json!(c.principal),
        json!(c.app_id),
        json!(output::tier(c.risk_tier)),
        json!(item.grant_age_days),
        json!(output::enum_text(
            audit::ReviewDecision::try_from(item.decision)
                .ok()
                .map(|d| d.as_str_name()),
            "REVIEW_DECISION_"
        )),
        json!(item.reviewer),
        json!(output::enum_text(
            audit::ReviewActionStatus::try_from(item.action)
                .ok()
                .map(|d| d.as_str_name()),
            "REVIEW_ACTION_STATUS_"
        )),
        json!(item.note),
    ]
}

fn print_review(review: &audit::QuarterlyReview, format: Format) -> anyhow::Result<()> {
    let mut items = Table::new(&ITEM_COLUMNS);
    for item in &review.items {
        items.row(item_cells(item));
    }
    match format {
        Format::Json => {
            println!(
                "{}",
                json!({
                    "review_id": review.review_id,
                    "tenant": review.tenant,
                    "year": review.year,
                    "quarter": review.quarter,
                    "generated_at": output::time(review.generated_at.as_ref()),
                    "generated_by": review.generated_by,
                    "unreviewed": review.unreviewed,
                    "open_actions": review.open_actions,
                    "items": items.objects(),
                })
            );
            Ok(())
        }
        Format::Csv => items.print(format),
        Format::Table => {
            println!(
                "review {} of {} {} Q{}: {} items, {} unreviewed, {} open actions (generated by {})",
                review.review_id,
                review.tenant,
                review.year,
                review.quarter,
                review.items.len(),
                review.unreviewed,
                review.open_actions,
                review.generated_by
            );
            items.print(format)
        }
    }
}
