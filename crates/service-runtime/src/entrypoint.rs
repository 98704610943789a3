//! The thin `main` every service binary shares: parse the command line, read config, start
//! logging, bind, run.
//!
//! `<service> [--config FILE]`; the file may also come from `<PREFIX>CONFIG`. `--help` and
//! `--version` print and exit 0; an unknown argument is refused with clap's message and exit
//! code 2 before anything starts. Exit code 2 also means the configuration was refused (the
//! message names the field), 1 a runtime failure.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ServiceConfig, Validate, load};

/// `--config FILE`: the service binaries' only option, and the one every subcommand that
/// reads a service's configuration takes (audit-svc's `migrate`, for one).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML), under the service's environment variables; default: the
    /// file `<PREFIX>CONFIG` names, else the defaults and variables alone
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration file: `--config`, else the one `<env_prefix>CONFIG` names.
    pub fn file(&self, env_prefix: &str) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| std::env::var_os(format!("{env_prefix}CONFIG")).map(PathBuf::from))
    }
}

/// A service binary's command line; its name, version and help are set at run time.
#[derive(Debug, Parser)]
struct ServiceCli {
    #[command(flatten)]
    config: ConfigArg,
}

const EXIT_CODES: &str = "Exit codes: 0 stopped (SIGTERM or ctrl-c); 1 a runtime failure; 2 the \
command line or the configuration was refused.";

/// Parses the command line of the service binary `name`. `Err` is clap's answer to print
/// and exit with ([`clap::Error::exit`]): help or version (exit code 0) or a refusal (2).
pub fn service_args<I, T>(
    name: &'static str,
    env_prefix: &str,
    args: I,
) -> Result<ConfigArg, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = ServiceCli::command()
        .name(name)
        .bin_name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(format!(
            "{name}: a clio-connect gRPC service; serves until SIGTERM or ctrl-c"
        ))
        .after_help(EXIT_CODES);
    parse_with::<ServiceCli, _, _>(command, env_prefix, args).map(|cli| cli.config)
}

/// Parses `args` with `command` (`P::command()`, perhaps adjusted), its `--config` options
/// (of every subcommand too) naming the `<env_prefix>CONFIG` variable in their help.
pub fn parse_with<P, I, T>(
    command: clap::Command,
    env_prefix: &str,
    args: I,
) -> Result<P, clap::Error>
where
    P: FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = name_config_variable(command, env_prefix);
    let mut matches = command.try_get_matches_from_mut(args)?;
    P::from_arg_matches_mut(&mut matches).map_err(|error| error.format(&mut command))
}

fn name_config_variable(command: clap::Command, env_prefix: &str) -> clap::Command {
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    let mut command = if command.get_arguments().any(|arg| arg.get_id() == "config") {
        command.mut_arg("config", |arg| {
            arg.help(format!(
                "The configuration file (TOML), under the {env_prefix}* variables; default: \
                 the file {env_prefix}CONFIG names, else the defaults and variables alone"
            ))
        })
    } else {
        command
    };
    for name in subcommands {
        command = command.mut_subcommand(name, |sub| name_config_variable(sub, env_prefix));
    }
    command
}

/// Implemented by each service's config to reach the shared part.
pub trait HasServiceConfig {
    fn service(&self) -> &ServiceConfig;
}

/// Runs a service binary to completion: its command line (exiting on `--help`, `--version`
/// or a refused argument), then [`run_service`].
pub fn service_main<C, F, Fut>(name: &'static str, env_prefix: &'static str, run: F) -> ExitCode
where
    C: DeserializeOwned + Validate + HasServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let args = service_args(name, env_prefix, std::env::args_os()).unwrap_or_else(|e| e.exit());
    run_service(name, env_prefix, args.file(env_prefix).as_deref(), run)
}

/// Runs the service `name` with the configuration file `config_path` (already resolved,
/// see [`ConfigArg::file`]) until it stops.
pub fn run_service<C, F, Fut>(
    name: &'static str,
    env_prefix: &str,
    config_path: Option<&std::path::Path>,
    run: F,
) -> ExitCode
where
    C: DeserializeOwned + Validate + HasServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config: C = match load(env_prefix, config_path) {
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
        let telemetry = crate::telemetry::init(name, service)?;
        let listen = service.listen;
        let outcome = async {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            tracing::info!(
                service = name,
                version = env!("CARGO_PKG_VERSION"),
                "starting"
            );
            run(config, listener, crate::shutdown::on_signal()).await
        }
        .await;
        // The service has stopped: the spans of its last work go out before the runtime ends.
        telemetry.shutdown().await;
        outcome
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<ConfigArg, clap::Error> {
        service_args("auth-svc", "AUTH_SVC_", [&["auth-svc"], args].concat())
    }

    #[test]
    fn the_config_file_is_taken_in_either_spelling() {
        assert_eq!(parse(&[]).unwrap().config, None);
        for args in [&["--config", "a.toml"][..], &["--config=a.toml"]] {
            assert_eq!(parse(args).unwrap().config, Some(PathBuf::from("a.toml")));
        }
    }

    #[test]
    fn an_explicit_file_wins_over_the_variable() {
        let given = ConfigArg {
            config: Some(PathBuf::from("given.toml")),
        };
        // A prefix no environment sets: absent, the file is only what was given.
        let prefix = "ENTRYPOINT_TEST_UNSET_";
        assert_eq!(given.file(prefix), Some(PathBuf::from("given.toml")));
        assert_eq!(ConfigArg::default().file(prefix), None);
    }

    #[test]
    fn help_names_the_option_and_its_variable_and_exits_0() {
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
        let text = help.to_string();
        assert!(text.contains("Usage: auth-svc [OPTIONS]"), "{text}");
        assert!(text.contains("--config <FILE>"), "{text}");
        assert!(text.contains("AUTH_SVC_CONFIG"), "{text}");
        let version = parse(&["--version"]).unwrap_err();
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
        assert_eq!(version.exit_code(), 0);
    }

    #[test]
    fn an_unknown_or_incomplete_argument_is_refused_with_exit_code_2() {
        for args in [
            &["--bogus"][..],
            &["--config"],
            &["serve"],
            &["--config", "a.toml", "--config", "b.toml"],
        ] {
            let error = parse(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
        let text = parse(&["--bogus"]).unwrap_err().to_string();
        assert!(text.contains("unexpected argument '--bogus'"), "{text}");
    }
}
