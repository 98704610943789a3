//! `clioctl webhooks ...`: near-real-time sync of a connection through Clio's webhooks
//! (enable and disable need tokens.operator; list also tokens.compliance).

use clap::Subcommand;
use proto::imports::v1 as import;
use serde_json::json;

use crate::clients::{Clients, Role};
use crate::output::{self, Format, Table};

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Subscribe a connection to Clio's changes of the resources (the grant needs
    /// webhooks:write and each resource's read scope).
    #[command(
        after_help = "Example:\n  clioctl webhooks enable 3f2c... --resources contacts,matters"
    )]
    Enable {
        connection: String,
        /// contacts, matters, calendar_entries, activities.
        #[arg(long, value_delimiter = ',', required = true)]
        resources: Vec<String>,
    },
    /// Remove a connection's subscriptions (all of them without --resources).
    #[command(
        after_help = "Example:\n  clioctl webhooks disable 3f2c... --reason \"matter closed\""
    )]
    Disable {
        connection: String,
        #[arg(long, value_delimiter = ',')]
        resources: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// A connection's subscriptions, removed ones included.
    #[command(after_help = "Example:\n  clioctl webhooks list 3f2c...")]
    List { connection: String },
}

pub async fn run(
    clients: &Clients,
    format: Format,
    command: WebhooksCommand,
) -> anyhow::Result<()> {
    let subscriptions = match command {
        WebhooksCommand::Enable {
            connection,
            resources,
        } => {
            let (mut client, target) = clients.import(&[Role::Operator])?;
            target
                .call(
                    "EnableWebhooks",
                    client.enable_webhooks(import::EnableWebhooksRequest {
                        connection_id: connection,
                        resources,
                    }),
                )
                .await?
        }
        WebhooksCommand::Disable {
            connection,
            resources,
            reason,
        } => {
            let (mut client, target) = clients.import(&[Role::Operator])?;
            target
                .call(
                    "DisableWebhooks",
                    client.disable_webhooks(import::DisableWebhooksRequest {
                        connection_id: connection,
                        resources,
                        reason,
                    }),
                )
                .await?
        }
        WebhooksCommand::List { connection } => {
            let (mut client, target) = clients.import(&[Role::Operator, Role::Compliance])?;
            target
                .call(
                    "ListWebhooks",
                    client.list_webhooks(import::ListWebhooksRequest {
                        connection_id: connection,
                    }),
                )
                .await?
        }
    };
    let mut table = Table::new(&[
        "subscription_id",
        "resource",
        "status",
        "expires_at",
        "last_delivery_at",
        "applied",
        "refused",
        "removed_reason",
    ]);
    for s in &subscriptions.subscriptions {
        table.row(vec![
            json!(s.subscription_id),
            json!(s.resource),
            json!(output::enum_text(
                import::WebhookStatus::try_from(s.status)
                    .ok()
                    .map(|v| v.as_str_name()),
                "WEBHOOK_STATUS_",
            )),
            output::time(s.expires_at.as_ref()),
            output::time(s.last_delivery_at.as_ref()),
            json!(s.deliveries_applied),
            json!(s.deliveries_refused),
            json!(s.removed_reason),
        ]);
    }
    table.print(format)
}
