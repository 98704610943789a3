//! The thin `main` every service binary shares: read config, start logging, bind, run.
//!
//! `<service> [--config FILE]`; the file may also come from `<PREFIX>CONFIG`. Exit code 2
//! means the configuration was refused (the message names the field), 1 a runtime failure.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ServiceConfig, Validate, load};

/// Implemented by each service's config to reach the shared part.
pub trait HasServiceConfig {
    fn service(&self) -> &ServiceConfig;
}

/// Runs a service binary to completion.
pub fn service_main<C, F, Fut>(name: &'static str, env_prefix: &'static str, run: F) -> ExitCode
where
    C: DeserializeOwned + Validate + HasServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config_path = config_path(env_prefix);
    let config: C = match load(env_prefix, config_path.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let service = config.service();
        crate::telemetry::init(service.log_format, &service.log_filter);
        let listener = TcpListener::bind(service.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", service.listen))?;
        tracing::info!(
            service = name,
            version = env!("CARGO_PKG_VERSION"),
            "starting"
        );
        run(config, listener, crate::shutdown::on_signal()).await
    });
    match outcome {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // The whole chain, once, where the error is finally handled.
            tracing::error!(
                service = name,
                error = format!("{error:#}"),
                "service failed"
            );
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_path(env_prefix: &str) -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(format!("{env_prefix}CONFIG")).map(PathBuf::from)
}
