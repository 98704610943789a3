//! `clioctl`: the operator command line for clio-connect.
//!
//! ```text
//! clioctl app register|approve|list|get|update-scopes|revoke   apps (operator; approve: compliance)
//! clioctl connect --app APP --principal P [--web]    connect a person's Clio account
//! clioctl connection list|get                        connections
//! clioctl revoke CONNECTION --reason R               revoke one connection
//! clioctl offboard PRINCIPAL --reason R              revoke every connection of a person
//! clioctl key rotate KEY_ID                          re-encrypt secrets under a new key
//! clioctl import submit|watch|get|cancel|list|records|export
//! clioctl audit query|watch|verify|export
//! clioctl report risk-tiers|full-access-apps|write-capable|zombies|offboarding|scope-drift|shared-logins
//! clioctl review generate|show|attest|export
//! clioctl demo                                       the local stack's end-to-end demo
//! ```
//!
//! Endpoints and the credential of each role come from built-in defaults, `--config FILE`
//! (TOML) and `CLIOCTL_*` variables; each command needs only its own role's token.

mod apps;
mod audit;
mod clients;
mod connections;
mod demo;
mod exit;
mod jobs;
mod output;
mod paging;
mod reports;
mod reviews;
mod suggestions;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

const CONFIG_HELP: &str =
    "Configuration (later wins): built-in endpoints (auth http://127.0.0.1:50051, \
import :50052, audit :50053), the TOML file of --config / CLIOCTL_CONFIG, then variables \
CLIOCTL_AUTH, CLIOCTL_IMPORT, CLIOCTL_AUDIT and CLIOCTL_TOKENS__<ROLE>. Each command needs only \
the token of its role (operator, compliance, connector, job_submitter or data_reader):

  auth = \"https://auth.clio-connect.internal:50051\"
  [tokens]
  job_submitter = \"...\"

Examples:
  clioctl --config deploy/local/config/clioctl.toml import list --status failed
  CLIOCTL_TOKENS__COMPLIANCE=... clioctl report zombies --tenant firm-1 --output csv";

#[derive(Parser)]
#[command(
    name = "clioctl",
    about = "Register apps, connect Clio accounts, run and follow imports, and check the audit record",
    after_help = format!("{CONFIG_HELP}\n\n{}", exit::EXIT_CODES_HELP),
)]
struct Cli {
    /// TOML file with the service endpoints and tokens (optional: CLIOCTL_* variables
    /// work alone).
    #[arg(long, global = true, env = "CLIOCTL_CONFIG")]
    config: Option<PathBuf>,
    /// How results are printed.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        default_value = "table",
        env = "CLIOCTL_OUTPUT"
    )]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register, approve, list, change and revoke Clio developer apps.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Connect a person's Clio account through an approved app (needs tokens.connector).
    #[command(after_help = "Examples:
  clioctl connect --app 7a1c... --principal alice@firm.example          # out-of-band: paste the code
  clioctl connect --app 7a1c... --principal alice@firm.example --web    # browser returns to auth-svc")]
    Connect(connections::ConnectArgs),
    /// List and show connections.
    #[command(subcommand)]
    Connection(connections::ConnectionCommand),
    /// Revoke one connection at Clio (needs tokens.operator).
    #[command(after_help = "Example:\n  clioctl revoke 3f2c... --reason \"laptop lost\"")]
    Revoke {
        /// The connection id.
        connection: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Revoke every connection of a departing person (needs tokens.operator; exit 3 when
    /// some connection could not be revoked).
    #[command(after_help = "Example:
  clioctl offboard bob@firm.example --reason \"left the firm\" --departed-at 2026-03-02T17:00:00Z")]
    Offboard {
        /// The person (as they connected).
        principal: String,
        #[arg(long)]
        reason: String,
        /// Only this tenant's connections.
        #[arg(long)]
        tenant: Option<String>,
        /// When the person left (RFC 3339; default now): the 2-hour clock starts here.
        #[arg(long, value_parser = output::parse_time)]
        departed_at: Option<prost_types::Timestamp>,
    },
    /// Encryption keys of stored Clio secrets.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Submit, follow, cancel and list import jobs; read imported records.
    #[command(subcommand)]
    Import(jobs::ImportCommand),
    /// Query, follow, verify and export the audit record (needs tokens.compliance).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Compliance reports (needs tokens.compliance).
    #[command(subcommand)]
    Report(reports::ReportCommand),
    /// The quarterly access review (needs tokens.compliance).
    #[command(subcommand)]
    Review(reviews::ReviewCommand),
    /// Billing suggestions from calendars: detect, list, approve (writes the time entry to
    /// Clio), reject (needs tokens.billing_reviewer or tokens.billing_approver).
    #[command(subcommand)]
    Suggest(suggestions::SuggestCommand),
    /// Near-real-time sync of a connection through Clio's webhooks: enable, disable, list.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Register an app, connect, import, and report: the local stack's end-to-end run
    /// (needs every token and the [demo] section).
    Demo,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a key from auth-svc's key configuration the active one; secrets are
    /// re-encrypted in the background (needs tokens.operator).
    #[command(after_help = "Example:\n  clioctl key rotate k2")]
    Rotate {
        /// A key id present in auth-svc's `keys`.
        new_key_id: String,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let clients = clients::Clients::load(cli.config.as_deref())?;
    let format = cli.output;
    match cli.command {
        Command::App(command) => apps::app(&clients, format, command).await,
        Command::Connect(args) => connections::connect(&clients, format, args).await,
        Command::Connection(command) => connections::connection(&clients, format, command).await,
        Command::Revoke { connection, reason } => {
            connections::revoke(&clients, format, connection, reason).await
        }
        Command::Offboard {
            principal,
            reason,
            tenant,
            departed_at,
        } => connections::offboard(&clients, format, principal, reason, tenant, departed_at).await,
        Command::Key(KeyCommand::Rotate { new_key_id }) => {
            connections::rotate_key(&clients, format, new_key_id).await
        }
        Command::Import(command) => jobs::run(&clients, format, command).await,
        Command::Audit(command) => audit::run(&clients, format, command).await,
        Command::Report(command) => reports::report(&clients, format, command).await,
        Command::Review(command) => reviews::review(&clients, format, command).await,
        Command::Suggest(command) => suggestions::run(&clients, format, command).await,
        Command::Webhooks(command) => webhooks::run(&clients, format, command).await,
        Command::Demo => demo::run(&clients).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("clioctl: cannot start the async runtime: {error}");
            return ExitCode::from(exit::code::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::code::OK),
        // The reader of standard output went away (`| head`): nothing left to say.
        Err(error) if broken_pipe(&error) => ExitCode::from(exit::code::OK),
        Err(error) => {
            eprintln!("clioctl: {error:#}");
            ExitCode::from(exit::code_of(&error))
        }
    }
}

fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help_with_an_example() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.has_subcommands() {
                for sub in command.get_subcommands() {
                    walk(sub, &path, missing);
                }
            } else if command.get_name() != "demo"
                && !command
                    .get_after_help()
                    .is_some_and(|help| help.to_string().contains("clioctl "))
            {
                missing.push(path);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
    }

    #[test]
    fn a_usage_error_exits_2() {
        let error = Cli::try_parse_from(["clioctl", "import", "submit"])
            .err()
            .map(|e| e.exit_code());
        assert_eq!(error, Some(2));
    }
}
