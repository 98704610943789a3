//! People's connections and their end: `clioctl connect`, `connection ...`, `revoke`,
//! `offboard` and `key rotate` (auth-svc).

use std::io::{BufRead, Write};

use clap::{Args, Subcommand, ValueEnum};
use proto::auth::v1 as auth;
use proto::common::v1 as common;
use serde_json::{Value, json};

use crate::clients::{Clients, Role};
use crate::exit::{Failure, code};
use crate::output::{self, Format, Table};
use crate::paging::PageArgs;

/// Who may read apps and connections, in the order clioctl looks for a configured token.
pub const READERS: [Role; 3] = [Role::Operator, Role::Compliance, Role::Connector];

#[derive(Clone, Copy, ValueEnum)]
pub enum ConnectionStatus {
    Active,
    NeedsReconnect,
    Revoked,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// The approved app to connect through (see `clioctl app list`).
    #[arg(long)]
    app: String,
    /// The firm person connecting (never a shared login).
    #[arg(long)]
    principal: String,
    /// Web flow: print the URL; Clio redirects the browser to auth-svc, which completes it.
    #[arg(long, conflicts_with = "code")]
    web: bool,
    /// Out-of-band: the code already copied from Clio's page (otherwise clioctl asks).
    #[arg(long)]
    code: Option<String>,
    /// Replace the tokens and grant of this existing connection.
    #[arg(long)]
    reconnect: Option<String>,
}

/// `clioctl connect`: show Clio's URL; out-of-band, take the success code the person
/// copies back (needs tokens.connector).
pub async fn connect(clients: &Clients, format: Format, args: ConnectArgs) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&[Role::Connector])?;
    let mode = if args.web {
        auth::AuthorizationMode::Web
    } else {
        auth::AuthorizationMode::OutOfBand
    };
    let started = target
        .call(
            "StartAuthorization",
            client.start_authorization(auth::StartAuthorizationRequest {
                app_id: args.app,
                principal: args.principal,
                mode: mode as i32,
                reconnect_connection_id: args.reconnect.unwrap_or_default(),
            }),
        )
        .await?;
    let expires = output::text(&output::time(started.expires_at.as_ref()));
    if args.web {
        println!(
            "Open this page, sign in to Clio and choose ALLOW ACCESS (valid until {expires}); \
             Clio returns the browser to auth-svc, which completes the connection:\n\n  {}",
            started.authorization_url
        );
        return Ok(());
    }
    // The URL goes to standard error when standard output carries JSON or CSV.
    let prompt = format!(
        "Open this page, sign in to Clio and choose ALLOW ACCESS:\n\n  {}\n",
        started.authorization_url
    );
    if format == Format::Table {
        println!("{prompt}");
    } else {
        eprintln!("{prompt}");
    }
    let code = match args.code {
        Some(code) => code,
        None => {
            eprint!("Paste the Clio success code: ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    let connection = complete(clients, &started.state, &code).await?;
    match format {
        Format::Table => print_connection(&connection),
        _ => one_connection(&connection).print_one(format)?,
    }
    Ok(())
}

pub async fn complete(
    clients: &Clients,
    state: &str,
    code: &str,
) -> anyhow::Result<auth::Connection> {
    let (mut client, target) = clients.auth(&[Role::Connector])?;
    target
        .call(
            "CompleteAuthorization",
            client.complete_authorization(auth::CompleteAuthorizationRequest {
                state: state.to_owned(),
                code: code.to_owned(),
            }),
        )
        .await
}

pub fn print_connection(connection: &auth::Connection) {
    let clio = connection.clio.clone().unwrap_or_default();
    println!(
        "connected: {} (Clio user {} {:?} at {:?}), scopes [{}]",
        connection.connection_id,
        clio.user_id,
        clio.user_name,
        clio.account_name,
        output::text(&output::scopes(&connection.granted_scopes))
    );
}

#[derive(Subcommand)]
pub enum ConnectionCommand {
    /// List connections, filtered by tenant, app, person or status.
    #[command(
        after_help = "Example:\n  clioctl connection list --tenant firm-1 --principal alice@firm.example"
    )]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, value_enum)]
        status: Option<ConnectionStatus>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one connection.
    #[command(after_help = "Example:\n  clioctl connection get 3f2c... --output json")]
    Get { connection: String },
}

pub async fn connection(
    clients: &Clients,
    format: Format,
    command: ConnectionCommand,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&READERS)?;
    match command {
        ConnectionCommand::List {
            tenant,
            app,
            principal,
            status,
            page,
        } => {
            let status = status.map_or(0, |s| {
                (match s {
                    ConnectionStatus::Active => auth::ConnectionStatus::Active,
                    ConnectionStatus::NeedsReconnect => auth::ConnectionStatus::NeedsReconnect,
                    ConnectionStatus::Revoked => auth::ConnectionStatus::Revoked,
                }) as i32
            });
            let mut table = Table::new(&CONNECTION_COLUMNS);
            let mut token = page.first_token();
            loop {
                let answer = target
                    .call(
                        "ListConnections",
                        client.list_connections(auth::ListConnectionsRequest {
                            tenant: tenant.clone(),
                            app_id: app.clone().unwrap_or_default(),
                            principal: principal.clone().unwrap_or_default(),
                            status,
                            region: 0,
                            page: Some(common::PageRequest {
                                page_size: page.size(),
                                page_token: token,
                            }),
                        }),
                    )
                    .await?;
                for connection in &answer.connections {
                    table.row(connection_cells(connection));
                }
                match page.next(answer.page.unwrap_or_default().next_page_token) {
                    Some(next) => token = next,
                    None => break,
                }
            }
            table.print(format)
        }
        ConnectionCommand::Get { connection } => {
            let connection = target
                .call(
                    "GetConnection",
                    client.get_connection(auth::GetConnectionRequest {
                        connection_id: connection,
                    }),
                )
                .await?;
            one_connection(&connection).print_one(format)
        }
    }
}

const CONNECTION_COLUMNS: [&str; 10] = [
    "connection_id",
    "tenant",
    "principal",
    "app_id",
    "status",
    "clio_user_id",
    "clio_account_id",
    "risk_tier",
    "scopes",
    "last_used_at",
];

fn connection_cells(c: &auth::Connection) -> Vec<Value> {
    let clio = c.clio.clone().unwrap_or_default();
    vec![
        json!(c.connection_id),
        json!(c.tenant),
        json!(c.principal),
        json!(c.app_id),
        json!(output::enum_text(
            auth::ConnectionStatus::try_from(c.status)
                .ok()
                .map(|s| s.as_str_name()),
            "CONNECTION_STATUS_"
        )),
        json!(clio.user_id),
        json!(clio.account_id),
        json!(output::tier(c.risk_tier)),
        output::scopes(&c.granted_scopes),
        output::time(c.last_used_at.as_ref()),
    ]
}

fn one_connection(c: &auth::Connection) -> Table {
    let mut columns = CONNECTION_COLUMNS.to_vec();
    columns.extend([
        "region",
        "clio_user_name",
        "clio_account_name",
        "drifted",
        "granted_at",
        "revoked_at",
        "revoked_by",
        "revocation_reason",
    ]);
    let clio = c.clio.clone().unwrap_or_default();
    let mut table = Table::new(&columns);
    let mut cells = connection_cells(c);
    cells.extend([
        json!(output::region(c.region)),
        json!(clio.user_name),
        json!(clio.account_name),
        json!(c.drifted),
        output::time(c.granted_at.as_ref()),
        output::time(c.revoked_at.as_ref()),
        json!(c.revoked_by),
        json!(c.revocation_reason),
    ]);
    table.row(cells);
    table
}

pub fn revocations(results: &[auth::RevocationResult]) -> Table {
    let mut table = Table::new(&["connection_id", "clio_outcome", "clio_detail", "revoked_at"]);
    for result in results {
        table.row(vec![
            json!(result.connection_id),
            json!(output::enum_text(
                auth::ClioRevocationOutcome::try_from(result.clio_outcome)
                    .ok()
                    .map(|o| o.as_str_name()),
                "CLIO_REVOCATION_OUTCOME_"
            )),
            json!(result.clio_detail),
            output::time(result.revoked_at.as_ref()),
        ]);
    }
    table
}

/// `clioctl revoke`: revoke one connection at Clio (needs tokens.operator).
pub async fn revoke(
    clients: &Clients,
    format: Format,
    connection: String,
    reason: String,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let result = target
        .call(
            "RevokeConnection",
            client.revoke_connection(auth::RevokeConnectionRequest {
                connection_id: connection,
                reason,
            }),
        )
        .await?;
    revocations(&[result]).print(format)
}

/// `clioctl offboard`: revoke every connection of a departing person (needs
/// tokens.operator).
pub async fn offboard(
    clients: &Clients,
    format: Format,
    principal: String,
    reason: String,
    tenant: Option<String>,
    departed_at: Option<prost_types::Timestamp>,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let response = target
        .call(
            "OffboardUser",
            client.offboard_user(auth::OffboardUserRequest {
                principal,
                reason,
                tenant: tenant.unwrap_or_default(),
                departed_at,
            }),
        )
        .await?;
    revocations(&response.results).print(format)?;
    for failure in &response.failures {
        eprintln!(
            "not revoked: {}: {} (run offboard again to retry)",
            failure.connection_id, failure.error
        );
    }
    if format == Format::Table {
        println!(
            "offboarded {}: {} connections revoked, {} failed",
            response.principal,
            response.results.len(),
            response.failures.len()
        );
    }
    if response.failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            code::BAD_OUTCOME,
            format!(
                "{} connection(s) of {} were not revoked",
                response.failures.len(),
                response.principal
            ),
        )
        .into())
    }
}

/// `clioctl key rotate`: make a configured key the active one (needs tokens.operator).
pub async fn rotate_key(
    clients: &Clients,
    format: Format,
    new_key_id: String,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let answer = target
        .call(
            "RotateEncryptionKey",
            client.rotate_encryption_key(auth::RotateEncryptionKeyRequest { new_key_id }),
        )
        .await?;
    let mut table = Table::new(&["active_key_id", "pending_reencryption"]);
    table.row(vec![
        json!(answer.active_key_id),
        json!(answer.pending_reencryption),
    ]);
    table.print_one(format)
}
