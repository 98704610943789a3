//! The auth-svc binary: command line (`--config FILE`, `--help`, `--version`), config,
//! telemetry, listener, then [`auth_svc::run`].

fn main() -> std::process::ExitCode {
    service_runtime::entrypoint::service_main("auth-svc", "AUTH_SVC_", auth_svc::run)
}
