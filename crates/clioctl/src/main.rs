//! `clioctl`: the command line for clio-connect.
//!
//! ```text
//! clioctl connect --app APP --principal alice@firm     # prints Clio's URL, asks for the success code
//! clioctl import --connection C --resources contacts,matters [--incremental]
//! clioctl watch JOB
//! clioctl revoke CONNECTION --reason "..."
//! clioctl offboard PRINCIPAL --reason "..."
//! clioctl verify --tenant firm
//! clioctl demo                                         # the local stack's end-to-end demo
//! ```
//!
//! Endpoints and the service credentials of each role come from `--config FILE` (TOML).

mod clients;
mod commands;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "clioctl",
    about = "Connect Clio accounts, import their data, and check the audit record"
)]
struct Cli {
    /// TOML file with the service endpoints and credentials.
    #[arg(long, env = "CLIOCTL_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect a person's Clio account through an app (out-of-band: paste the success code).
    Connect {
        #[arg(long)]
        app: String,
        #[arg(long)]
        principal: String,
        /// The code, if already copied; otherwise clioctl asks for it.
        #[arg(long)]
        code: Option<String>,
    },
    /// Submit an import job and follow it to the end.
    Import {
        #[arg(long)]
        connection: String,
        #[arg(long, value_delimiter = ',', default_value = "contacts")]
        resources: Vec<String>,
        #[arg(long)]
        incremental: bool,
    },
    /// Follow a job's progress.
    Watch { job: String },
    /// Revoke one connection at Clio.
    Revoke {
        connection: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke every connection of a departing person.
    Offboard {
        principal: String,
        #[arg(long)]
        reason: String,
    },
    /// Verify a tenant's audit chain and checkpoints.
    Verify {
        #[arg(long)]
        tenant: String,
    },
    /// Register an app, connect, import, and report: the local stack's end-to-end run.
    Demo,
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
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let clients = clients::Clients::from_file(&cli.config)?;
        match cli.command {
            Command::Connect {
                app,
                principal,
                code,
            } => commands::connect(&clients, &app, &principal, code).await,
            Command::Import {
                connection,
                resources,
                incremental,
            } => commands::import(&clients, &connection, &resources, incremental)
                .await
                .map(drop),
            Command::Watch { job } => commands::watch(&clients, &job).await.map(drop),
            Command::Revoke { connection, reason } => {
                commands::revoke(&clients, &connection, &reason).await
            }
            Command::Offboard { principal, reason } => {
                commands::offboard(&clients, &principal, &reason).await
            }
            Command::Verify { tenant } => commands::verify(&clients, &tenant).await,
            Command::Demo => demo::run(&clients).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clioctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}
