//! The audit-svc binary: config, telemetry, listener, then [`audit_svc::run`].

fn main() -> std::process::ExitCode {
    service_runtime::entrypoint::service_main("audit-svc", "AUDIT_SVC_", audit_svc::run)
}
