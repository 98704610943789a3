//! The audit-svc binary: the service (config, telemetry, listener, then
//! [`audit_svc::run`]), or `audit-svc verify ...` to check an export offline.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("verify") {
        return audit_svc::cli::verify_command(&args[1..]);
    }
    service_runtime::entrypoint::service_main("audit-svc", "AUDIT_SVC_", audit_svc::run)
}
