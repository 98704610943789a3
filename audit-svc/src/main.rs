//! The audit-svc binary: the service (config, telemetry, listener, then
//! [`audit_svc::run`]), `audit-svc verify ...` to check an export offline, or
//! `audit-svc rebuild-projections` to rebuild the compliance projections from the log, or
//! `audit-svc migrate` to migrate with the migration login (before the service starts).

use audit_svc::cli;
use audit_svc::config::ENV_PREFIX;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("verify") => cli::verify_command(&args[1..]),
        Some("rebuild-projections") => cli::rebuild_projections_command(&args[1..]),
        Some("migrate") => cli::migrate_command(&args[1..]),
        _ => service_runtime::entrypoint::service_main("audit-svc", ENV_PREFIX, audit_svc::run),
    }
}
