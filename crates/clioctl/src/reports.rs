//! `clioctl report ...` (ComplianceService's reports) and `clioctl review ...` (the
//! quarterly access review). Every command needs tokens.compliance.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use proto::audit::v1 as audit;
use serde_json::{Value, json};

use crate::clients::Clients;
use crate::output::{self, Format, Table};

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Connections grouped by risk tier, most dangerous first.
    #[command(after_help = "Example:\n  clioctl report risk-tiers --tenant firm-1 --min-tier high")]
    RiskTiers {
        #[arg(long)]
        tenant: String,
        /// Only tiers at or above this one.
        #[arg(long, value_enum)]
        min_tier: Option<Tier>,
    },
    /// Apps declaring read/write on every family, with their live connections.
    #[command(after_help = "Example:\n  clioctl report full-access-apps --tenant firm-1")]
    FullAccessApps {
        #[arg(long)]
        tenant: String,
    },
    /// Connections able to write, with writes performed without an approval.
    #[command(after_help = "Example:\n  clioctl report write-capable --tenant firm-1 --output csv")]
    WriteCapable {
        #[arg(long)]
        tenant: String,
    },
    /// Connections unused for --idle-days (default 90).
    #[command(after_help = "Example:\n  clioctl report zombies --tenant firm-1 --idle-days 30")]
    Zombies {
        #[arg(long)]
        tenant: String,
        /// Days without use that make a connection a zombie.
        #[arg(long, default_value_t = 90)]
        idle_days: u32,
        /// Reproduce the report as of this RFC 3339 time (default now).
        #[arg(long, value_parser = output::parse_time)]
        as_of: Option<prost_types::Timestamp>,
    },
    /// Offboardings and the 2-hour deauthorization protocol: flagged and open ones.
    #[command(after_help = "Example:
  clioctl report offboarding --tenant firm-1 --from 2026-01-01T00:00:00Z")]
    Offboarding {
        #[arg(long)]
        tenant: String,
        /// Offboardings from this RFC 3339 time (inclusive).
        #[arg(long, value_parser = output::parse_time)]
        from: Option<prost_types::Timestamp>,
        /// Offboardings before this RFC 3339 time.
        #[arg(long, value_parser = output::parse_time)]
        to: Option<prost_types::Timestamp>,
    },
    /// Connections whose grant differs from their app's current declaration.
    #[command(after_help = "Example:\n  clioctl report scope-drift --tenant firm-1")]
    ScopeDrift {
        #[arg(long)]
        tenant: String,
    },
    /// One Clio login connected by several people.
    #[command(after_help = "Example:\n  clioctl report shared-logins --tenant firm-1")]
    SharedLogins {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Tier {
    Low,
    Medium,
    High,
    VeryHigh,
}

impl From<Tier> for proto::common::v1::RiskTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Low => proto::common::v1::RiskTier::Low,
            Tier::Medium => proto::common::v1::RiskTier::Medium,
            Tier::High => proto::common::v1::RiskTier::High,
            Tier::VeryHigh => proto::common::v1::RiskTier::VeryHigh,
        }
    }
}

pub async fn report(
    clients: &Clients,
    format: Format,
    command: ReportCommand,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.compliance()?;
    let table = match command {
        ReportCommand::RiskTiers { tenant, min_tier } => {
            let answer = target
                .call(
                    "ConnectionsByRiskTier",
                    client.connections_by_risk_tier(audit::ConnectionsByRiskTierRequest {
                        tenant,
                        min_tier: min_tier
                            .map_or(0, |t| proto::common::v1::RiskTier::from(t) as i32),
                    }),
                )
                .await?;
            let mut table = Table::new(&[
                "tier",
                "connection_id",
                "principal",
                "app_id",
                "clio_user_id",
                "scopes",
                "full_account_access",
                "granted_at",
                "last_used_at",
            ]);
            for group in &answer.tiers {
                for c in &group.connections {
                    table.row(vec![
                        json!(output::tier(group.tier)),
                        json!(c.connection_id),
                        json!(c.principal),
                        json!(c.app_id),
                        json!(c.clio_user_id),
                        output::scopes(&c.scopes),
                        json!(c.full_account_access),
                        output::time(c.granted_at.as_ref()),
                        output::time(c.last_used_at.as_ref()),
                    ]);
                }
            }
            table
        }
        ReportCommand::FullAccessApps { tenant } => {
            let answer = target
                .call(
                    "FullAccessApps",
                    client.full_access_apps(audit::FullAccessAppsRequest { tenant }),
                )
                .await?;
            let mut table = Table::new(&[
                "app_id",
                "risk_tier",
                "full_account_access",
                "live_connections",
                "declared_scopes",
            ]);
            for app in &answer.apps {
                table.row(vec![
                    json!(app.app_id),
                    json!(output::tier(app.risk_tier)),
                    json!(app.full_account_access),
                    json!(app.live_connections),
                    output::scopes(&app.declared_scopes),
                ]);
            }
            table
        }
        ReportCommand::WriteCapable { tenant } => {
            let answer = target
                .call(
                    "WriteCapableConnections",
                    client.write_capable_connections(audit::WriteCapableConnectionsRequest {
                        tenant,
                    }),
                )
                .await?;
            let mut table = Table::new(&[
                "connection_id",
                "principal",
                "app_id",
                "write_scopes",
                "writes_performed",
                "writes_approved",
                "writes_unapproved",
                "unapproved_write_event_ids",
            ]);
            for w in &answer.connections {
                let c = w.connection.clone().unwrap_or_default();
                table.row(vec![
                    json!(c.connection_id),
                    json!(c.principal),
                    json!(c.app_id),
                    output::scopes(&w.write_scopes),
                    json!(w.writes_performed),
                    json!(w.writes_approved),
                    json!(w.writes_unapproved),
                    output::strings(&w.unapproved_write_event_ids),
                ]);
            }
            table
        }
        ReportCommand::Zombies {
            tenant,
            idle_days,
            as_of,
        } => {
            let answer = target
                .call(
                    "ZombieConnections",
                    client.zombie_connections(audit::ZombieConnectionsRequest {
                        tenant,
                        idle_days,
                        as_of,
                    }),
                )
                .await?;
            let mut table = Table::new(&[
                "connection_id",
                "principal",
                "app_id",
                "idle_days",
                "last_used_at",
                "risk_tier",
                "scopes",
            ]);
            for z in &answer.connections {
                let c = z.connection.clone().unwrap_or_default();
                table.row(vec![
                    json!(c.connection_id),
                    json!(c.principal),
                    json!(c.app_id),
                    json!(z.idle_days),
                    output::time(c.last_used_at.as_ref()),
                    json!(output::tier(c.risk_tier)),
                    output::scopes(&c.scopes),
                ]);
            }
            table
        }
        ReportCommand::Offboarding { tenant, from, to } => {
            let answer = target
                .call(
                    "OffboardingReport",
                    client.offboarding_report(audit::OffboardingReportRequest {
                        tenant,
                        offboarded: Some(audit::TimeRange { from, to }),
                    }),
                )
                .await?;
            let mut table = Table::new(&[
                "principal",
                "departed_at",
                "offboarded_at",
                "connections_revoked",
                "failed_at_clio",
                "seconds_to_clio_confirmation",
                "open",
                "flagged",
                "flag_reasons",
                "live_connection_ids",
            ]);
            for e in &answer.entries {
                table.row(vec![
                    json!(e.principal),
                    output::time(e.departed_at.as_ref()),
                    output::time(e.offboarded_at.as_ref()),
                    json!(e.connections_revoked),
                    json!(e.revocations_failed_at_clio),
                    json!(e.seconds_to_clio_confirmation),
                    json!(e.open),
                    json!(e.flagged),
                    output::strings(&e.flag_reasons),
                    output::strings(&e.live_connection_ids),
                ]);
            }
            table
        }
        ReportCommand::ScopeDrift { tenant } => {
            let answer = target
                .call(
                    "ScopeDriftReport",
                    client.scope_drift_report(audit::ScopeDriftReportRequest { tenant }),
                )
                .await?;
            let mut table = Table::new(&[
                "connection_id",
                "principal",
                "app_id",
                "granted",
                "declared",
                "missing_from_grant",
                "beyond_declaration",
            ]);
            for d in &answer.connections {
                let c = d.connection.clone().unwrap_or_default();
                table.row(vec![
                    json!(c.connection_id),
                    json!(c.principal),
                    json!(c.app_id),
                    output::scopes(&c.scopes),
                    output::scopes(&d.app_declared_scopes),
                    output::scopes(&d.missing_from_grant),
                    output::scopes(&d.beyond_declaration),
                ]);
            }
            table
        }
        ReportCommand::SharedLogins { tenant } => {
            let answer = target
                .call(
                    "SharedLoginSuspicions",
                    client.shared_login_suspicions(audit::SharedLoginSuspicionsRequest { tenant }),
                )
                .await?;
            let mut table = Table::new(&[
                "clio_user_id",
                "clio_account_id",
                "principals",
                "connection_ids",
            ]);
            for s in &answer.suspicions {
                table.row(vec![
                    json!(s.clio_user_id),
                    json!(s.clio_account_id),
                    output::strings(&s.principals),
                    output::strings(&s.connection_ids),
                ]);
            }
            table
        }
    };
    table.print(format)
}

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
    match command {
        ReviewCommand::Generate {
            tenant,
            year,
            quarter,
        } => {
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
        ReviewCommand::Show {
            review,
            unreviewed_only,
        } => {
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
        ReviewCommand::Attest {
            review,
            connection,
            decision,
            note,
        } => {
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
        ReviewCommand::Export {
            review,
            format: export_format,
            out,
        } => {
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
            crate::audit::write_chunks(stream, &target, "ExportQuarterlyReview", out).await
        }
    }
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
