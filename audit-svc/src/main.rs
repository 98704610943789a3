//! The audit-svc binary: the service (config, telemetry, listener, then
//! [`audit_svc::run`]), `audit-svc verify ...` to check an export offline or the database
//! against witness files, `audit-svc rebuild-projections` to rebuild the compliance
//! projections from the log, or `audit-svc migrate` to migrate with the migration login
//! (before the service starts). `audit-svc --help` lists them; the command line is
//! [`audit_svc::cli::Cli`].

use audit_svc::cli::{self, Cli};
use audit_svc::config::ENV_PREFIX;

fn main() -> std::process::ExitCode {
    let cli = Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(command) => cli::run_command(command),
        None => service_runtime::entrypoint::run_service(
            "audit-svc",
            ENV_PREFIX,
            cli.service.file(ENV_PREFIX).as_deref(),
            audit_svc::run,
        ),
    }
}
