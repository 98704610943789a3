//! `clioctl suggest ...`: find unbilled time in a connection's calendar, list the billing
//! suggestions, and approve (writing the time entry to Clio) or reject each one.
//!
//! Needs tokens.billing_reviewer (a person's own credential: their own connections) or
//! tokens.billing_approver (every connection of its tenants).

use clap::{Subcommand, ValueEnum};
use proto::suggestions::v1 as pb;
use proto::suggestions::v1::suggestion_service_client::SuggestionServiceClient;
use serde_json::{Value, json};

use crate::clients::{Clients, Role, Service, Target};
use crate::output::{self, Format, Table};
use crate::paging::PageArgs;

/// Who may review suggestions, in the order clioctl looks for a configured token.
const REVIEWERS: [Role; 2] = [Role::BillingReviewer, Role::BillingApprover];

const COLUMNS: [&str; 10] = [
    "suggestion_id",
    "status",
    "date",
    "hours",
    "matter_id",
    "user_id",
    "description",
    "decided_by",
    "clio_activity_id",
    "error",
];

#[derive(Subcommand)]
pub enum SuggestCommand {
    /// Read a connection's calendar over a date range and suggest its unbilled time.
    #[command(after_help = "Example:
  clioctl suggest detect --connection 3f2c... --from 2026-06-01T00:00:00Z --to 2026-07-01T00:00:00Z")]
    Detect {
        #[arg(long)]
        connection: String,
        /// Start of the range (RFC 3339).
        #[arg(long, value_parser = output::parse_time)]
        from: prost_types::Timestamp,
        /// End of the range (RFC 3339), at most 93 days after --from.
        #[arg(long, value_parser = output::parse_time)]
        to: prost_types::Timestamp,
    },
    /// List suggestions (a reviewer sees their own; an approver every one of its tenants).
    #[command(after_help = "Examples:
  clioctl suggest list --status pending
  clioctl suggest list --matter 1600000012 --all --output json")]
    List {
        #[arg(long)]
        connection: Option<String>,
        /// The Clio user the time is billed to.
        #[arg(long)]
        user: Option<i64>,
        #[arg(long)]
        matter: Option<i64>,
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Approve a suggestion (optionally edited) and write its time entry to Clio.
    #[command(after_help = "Examples:
  clioctl suggest approve 0191...
  clioctl suggest approve 0191... --hours 1.5 --description \"Client meeting and notes\"")]
    Approve {
        suggestion: String,
        /// The time to bill instead of the suggested, in hours (0.1 = 6 minutes).
        #[arg(long)]
        hours: Option<f64>,
        /// The time entry's note instead of the suggested.
        #[arg(long)]
        description: Option<String>,
    },
    /// Reject a suggestion; nothing is written to Clio.
    #[command(
        after_help = "Example:\n  clioctl suggest reject 0191... --reason \"covered by the fixed fee\""
    )]
    Reject {
        suggestion: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Status {
    Pending,
    Approved,
    Written,
    Rejected,
    Failed,
    Cancelled,
}

impl From<Status> for pb::SuggestionStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => pb::SuggestionStatus::Pending,
            Status::Approved => pb::SuggestionStatus::Approved,
            Status::Written => pb::SuggestionStatus::Written,
            Status::Rejected => pb::SuggestionStatus::Rejected,
            Status::Failed => pb::SuggestionStatus::Failed,
            Status::Cancelled => pb::SuggestionStatus::Cancelled,
        }
    }
}

fn client(
    clients: &Clients,
) -> anyhow::Result<(SuggestionServiceClient<crate::clients::Authed>, Target)> {
    let (channel, target) = clients.channel(Service::Import, &REVIEWERS)?;
    Ok((SuggestionServiceClient::new(channel), target))
}

pub async fn run(clients: &Clients, format: Format, command: SuggestCommand) -> anyhow::Result<()> {
    let (mut client, target) = client(clients)?;
    match command {
        SuggestCommand::Detect {
            connection,
            from,
            to,
        } => {
            let found = target
                .call(
                    "DetectUnbilledTime",
                    client.detect_unbilled_time(pb::DetectUnbilledTimeRequest {
                        connection_id: connection,
                        from: Some(from),
                        to: Some(to),
                    }),
                )
                .await?;
            let skipped = found.skipped.unwrap_or_default();
            eprintln!(
                "{} calendar entries read; skipped: {} without a matter, {} all-day, {} cancelled, \
                 {} too short, {} without a user, {} unreadable, {} already billed, {} already suggested",
                found.entries_read,
                skipped.without_matter,
                skipped.all_day,
                skipped.cancelled,
                skipped.too_short,
                skipped.without_user,
                skipped.unreadable,
                skipped.already_billed,
                skipped.already_suggested
            );
            let mut table = Table::new(&COLUMNS);
            for suggestion in &found.created {
                table.row(cells(suggestion));
            }
            table.print(format)
        }
        SuggestCommand::List {
            connection,
            user,
            matter,
            status,
            page,
        } => {
            let mut table = Table::new(&COLUMNS);
            let mut token = page.first_token();
            loop {
                let answer = target
                    .call(
                        "ListSuggestions",
                        client.list_suggestions(pb::ListSuggestionsRequest {
                            connection_id: connection.clone().unwrap_or_default(),
                            user_id: user.unwrap_or_default(),
                            matter_id: matter.unwrap_or_default(),
                            status: status.map_or(0, |s| pb::SuggestionStatus::from(s) as i32),
                            page_size: page.size(),
                            page_token: token,
                        }),
                    )
                    .await?;
                for suggestion in &answer.suggestions {
                    table.row(cells(suggestion));
                }
                match page.next(answer.next_page_token) {
                    Some(next) => token = next,
                    None => break,
                }
            }
            table.print(format)
        }
        SuggestCommand::Approve {
            suggestion,
            hours,
            description,
        } => {
            let quantity_secs = match hours {
                None => 0,
                Some(h) if h > 0.0 && h <= 24.0 => (h * 3_600.0).round() as i64,
                Some(_) => {
                    return Err(crate::exit::Failure::new(
                        crate::exit::code::USAGE,
                        "--hours must be more than 0 and at most 24",
                    )
                    .into());
                }
            };
            let approved = target
                .call(
                    "ApproveSuggestion",
                    client.approve_suggestion(pb::ApproveSuggestionRequest {
                        suggestion_id: suggestion,
                        quantity_secs,
                        description: description.unwrap_or_default(),
                    }),
                )
                .await?;
            one(&approved, format)
        }
        SuggestCommand::Reject { suggestion, reason } => {
            let rejected = target
                .call(
                    "RejectSuggestion",
                    client.reject_suggestion(pb::RejectSuggestionRequest {
                        suggestion_id: suggestion,
                        reason,
                    }),
                )
                .await?;
            one(&rejected, format)
        }
    }
}

fn one(suggestion: &pb::Suggestion, format: Format) -> anyhow::Result<()> {
    let mut table = Table::new(&COLUMNS);
    table.row(cells(suggestion));
    table.print_one(format)
}

fn cells(s: &pb::Suggestion) -> Vec<Value> {
    vec![
        json!(s.suggestion_id),
        json!(output::enum_text(
            pb::SuggestionStatus::try_from(s.status)
                .ok()
                .map(|s| s.as_str_name()),
            "SUGGESTION_STATUS_"
        )),
        json!(s.date),
        json!(s.quantity_secs as f64 / 3_600.0),
        json!(s.matter_id),
        json!(s.user_id),
        json!(s.description),
        json!(s.decided_by),
        if s.clio_activity_id == 0 {
            Value::Null
        } else {
            json!(s.clio_activity_id)
        },
        json!(s.error),
    ]
}
