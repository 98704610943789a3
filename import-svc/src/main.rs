//! The import-svc binary: command line (`--config FILE`, `--help`, `--version`), config,
//! telemetry, listener, then [`import_svc::run`].

fn main() -> std::process::ExitCode {
    service_runtime::entrypoint::service_main("import-svc", "IMPORT_SVC_", import_svc::run)
}
