//! The binary's subcommands.
//!
//! `audit-svc verify --file export.jsonl --public-key <base64>`: checks an export offline,
//! with no database and no trust in the file's own header keys. Exit codes: 0 the chain and
//! every checkpoint verify; 1 the chain is broken (the first broken event is printed); 2 the
//! command line or the file could not be used.
//!
//! `audit-svc rebuild-projections [--config FILE]`: with the service's own configuration,
//! runs the migrations, recreates dropped projection tables and rebuilds every projection
//! from the log, whether or not it looked stale. Exit codes: 0 rebuilt; 1 the database
//! failed; 2 the command line or the configuration was refused (the message names the
//! field).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use service_runtime::config::load;

use crate::config::{Config, ENV_PREFIX};
use crate::export::verify_export;
use crate::projections::{self, Rebuilt};
use crate::signing::{TrustedKeys, public_key_from_base64};

const USAGE: &str = "usage: audit-svc verify --file <export.jsonl> --public-key <base64> \
[--public-key <base64> ...]";

struct Arguments {
    file: PathBuf,
    keys: TrustedKeys,
}

fn parse(args: &[String]) -> Result<Arguments, String> {
    let mut file = None;
    let mut keys = TrustedKeys::default();
    let mut given_keys = 0;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--file" => file = Some(PathBuf::from(value()?)),
            "--public-key" => {
                let text = value()?;
                let key = public_key_from_base64(&text)
                    .ok_or_else(|| "--public-key: not a base64 Ed25519 public key".to_owned())?;
                keys.add(key);
                given_keys += 1;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let file = file.ok_or("--file is required")?;
    if given_keys == 0 {
        return Err("--public-key is required (the key checkpoints must be signed with)".into());
    }
    Ok(Arguments { file, keys })
}

/// Runs the subcommand with the arguments after `verify`.
pub fn verify_command(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let arguments = match parse(args) {
        Ok(arguments) => arguments,
        Err(problem) => {
            eprintln!("audit-svc verify: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let open = || File::open(&arguments.file).map(BufReader::new);
    match verify_export(open, &arguments.keys) {
        Err(error) => {
            eprintln!("audit-svc verify: {}: {error}", arguments.file.display());
            ExitCode::from(2)
        }
        Ok((tenant, verdict)) => match verdict.first_broken {
            None => {
                println!(
                    "ok: tenant {tenant:?}, {} events, {} checkpoints, head {}",
                    verdict.events_checked, verdict.checkpoints_checked, verdict.head_hash
                );
                ExitCode::SUCCESS
            }
            Some(broken) => {
                println!(
                    "broken: tenant {tenant:?}, sequence {}, event {}: {} ({} events verified before it)",
                    broken.sequence, broken.event_id, broken.reason, verdict.events_checked
                );
                ExitCode::from(1)
            }
        },
    }
}

const REBUILD_USAGE: &str = "usage: audit-svc rebuild-projections [--config <file.toml>] \
(the service's configuration: also AUDIT_SVC_CONFIG, and AUDIT_SVC_* variables)";

/// The `--config` file, if given; as for the service, `AUDIT_SVC_CONFIG` otherwise.
fn config_file(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut file = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if let Some(path) = arg.strip_prefix("--config=") {
            file = Some(PathBuf::from(path));
        } else if arg == "--config" {
            let path = args.next().ok_or("--config needs a value")?;
            file = Some(PathBuf::from(path));
        } else {
            return Err(format!("unknown argument {arg:?}"));
        }
    }
    Ok(file.or_else(|| std::env::var_os(format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from)))
}

/// Runs the subcommand with the arguments after `rebuild-projections`.
pub fn rebuild_projections_command(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{REBUILD_USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match config_file(args).and_then(|file| {
        // The same layers and checks as the service, so a refusal names the same field.
        load::<Config>(ENV_PREFIX, file.as_deref()).map_err(|e| e.to_string())
    }) {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("audit-svc rebuild-projections: {problem}\n{REBUILD_USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(rebuild_projections(&config)));
    match outcome {
        Ok((rebuilt, took)) => {
            println!("{}", rebuilt_summary(&rebuilt, took));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("audit-svc rebuild-projections: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Migrates with the configured login (which may recreate tables; `audit_appender` may
/// not), then rebuilds.
async fn rebuild_projections(config: &Config) -> anyhow::Result<(Rebuilt, Duration)> {
    let pool = crate::store::migrate(&config.service.database).await?;
    let started = Instant::now();
    let rebuilt = projections::rebuild(&pool).await;
    let took = started.elapsed();
    pool.close().await;
    Ok((rebuilt?, took))
}

fn rebuilt_summary(rebuilt: &Rebuilt, took: Duration) -> String {
    let recreated = if rebuilt.recreated_tables.is_empty() {
        String::new()
    } else {
        format!(
            "; recreated missing tables: {}",
            rebuilt.recreated_tables.join(", ")
        )
    };
    format!(
        "rebuilt compliance projections: {} events replayed from {} tenant(s) in {} ms{recreated}",
        rebuilt.events_replayed,
        rebuilt.tenants,
        took.as_millis()
    )
}
