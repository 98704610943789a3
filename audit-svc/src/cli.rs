//! The binary's subcommands.
//!
//! `audit-svc verify --file export.jsonl --public-key <base64> [--witness FILE ...]`: checks
//! an export offline, with no database and no trust in the file's own header keys (and,
//! with `--witness`, against the witnessed checkpoints of its range).
//!
//! `audit-svc verify --witness FILE [--witness FILE ...] [--config FILE] [--tenant T ...]
//! [--public-key <base64> ...]`: checks the database (the service's configuration, read as
//! the service login) against the witness files: every tenant's whole chain, its own
//! checkpoints, and every witnessed checkpoint. The keys are those of the configuration
//! unless `--public-key` names them.
//!
//! Exit codes of `verify`: 0 every chain and checkpoint verifies; 1 a chain is broken (the
//! first broken event of each broken tenant is printed); 2 the command line, a file, the
//! configuration or the database could not be used.
//!
//! `audit-svc migrate [--config FILE]`: with the service's configuration and its migration
//! login (`database.migration_url`, else `service.database.url`), runs the migrations and
//! rebuilds the projections if they cannot be trusted — what the service does at start-up
//! unless `database.migrate_at_start` is false (a Kubernetes init container runs this
//! instead). Exit codes: 0 done; 1 the database failed; 2 the command line or the
//! configuration was refused.
//!
//! `audit-svc rebuild-projections [--config FILE]`: with the service's own configuration,
//! runs the migrations (with the migration login), recreates dropped projection tables and
//! rebuilds every projection from the log, whether or not it looked stale. Exit codes: 0
//! rebuilt; 1 the database failed; 2 the command line or the configuration was refused (the
//! message names the field).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use service_runtime::config::load;

use crate::chain::{Checkpoint, Verdict};
use crate::config::{Config, ENV_PREFIX};
use crate::export::verify_export_witnessed;
use crate::projections::{self, Rebuilt};
use crate::signing::{Signer, TrustedKeys, public_key_from_base64};
use crate::verify::verify_witnessed;
use crate::witness::read_witness;

const USAGE: &str = "usage: audit-svc verify --file <export.jsonl> --public-key <base64> \
[--public-key <base64> ...] [--witness <witness.jsonl> ...]
       audit-svc verify --witness <witness.jsonl> [--witness ...] [--config <file.toml>] \
[--tenant <tenant> ...] [--public-key <base64> ...]";

struct Arguments {
    /// An export to check; `None`: the database.
    file: Option<PathBuf>,
    keys: TrustedKeys,
    given_keys: usize,
    witnesses: Vec<PathBuf>,
    config: Option<PathBuf>,
    tenants: Vec<String>,
}

fn parse(args: &[String]) -> Result<Arguments, String> {
    let mut file = None;
    let mut keys = TrustedKeys::default();
    let mut given_keys = 0;
    let mut witnesses = Vec::new();
    let mut config = None;
    let mut tenants = Vec::new();
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
            "--witness" => witnesses.push(PathBuf::from(value()?)),
            "--config" => config = Some(PathBuf::from(value()?)),
            "--tenant" => tenants.push(value()?),
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
    match &file {
        None if witnesses.is_empty() => {
            return Err(
                "--file (an export) or --witness (to check the database) is required".into(),
            );
        }
        Some(_) if given_keys == 0 => {
            return Err(
                "--public-key is required (the key checkpoints must be signed with)".into(),
            );
        }
        Some(_) if config.is_some() || !tenants.is_empty() => {
            return Err("--config and --tenant check the database: leave out --file".into());
        }
        _ => {}
    }
    Ok(Arguments {
        file,
        keys,
        given_keys,
        witnesses,
        config,
        tenants,
    })
}

/// Every checkpoint of the witness files, in order.
fn read_witnesses(paths: &[PathBuf]) -> Result<Vec<Checkpoint>, String> {
    let mut checkpoints = Vec::new();
    for path in paths {
        checkpoints.extend(read_witness(path).map_err(|e| e.to_string())?);
    }
    Ok(checkpoints)
}

/// The line printed for a tenant's verdict.
fn verdict_line(tenant: &str, verdict: &Verdict) -> String {
    match &verdict.first_broken {
        None => format!(
            "ok: tenant {tenant:?}, {} events, {} checkpoints, {} witnessed, head {}",
            verdict.events_checked,
            verdict.checkpoints_checked,
            verdict.witnessed_checked,
            verdict.head_hash
        ),
        Some(broken) => format!(
            "broken: tenant {tenant:?}, sequence {}, event {}: {} ({} events verified before it)",
            broken.sequence, broken.event_id, broken.reason, verdict.events_checked
        ),
    }
}

/// The database check behind `audit-svc verify --witness` without `--file`: the service's
/// configuration, its login's pool, every tenant (or `tenants`) against `witnessed`.
/// `keys`: the configuration's (signing key and trusted keys) when `None`.
pub async fn verify_database(
    config: &Config,
    keys: Option<TrustedKeys>,
    witnessed: Vec<Checkpoint>,
    tenants: Option<Vec<String>>,
) -> anyhow::Result<Vec<(String, Verdict)>> {
    let keys = match keys {
        Some(keys) => keys,
        None => {
            let mut keys = TrustedKeys::parse(&config.signing.trusted_public_keys)?;
            if let Some(signer) = Signer::from_config(&config.signing)? {
                keys.add(signer.public_key());
            }
            keys
        }
    };
    let pool = crate::store::service_pool(&config.service.database)?;
    let verdicts = verify_witnessed(&pool, &keys, witnessed, tenants).await;
    pool.close().await;
    Ok(verdicts?)
}

fn verify_database_command(arguments: Arguments) -> ExitCode {
    let prepared = read_witnesses(&arguments.witnesses).and_then(|witnessed| {
        let file = arguments
            .config
            .clone()
            .or_else(|| std::env::var_os(format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from));
        let config = load::<Config>(ENV_PREFIX, file.as_deref()).map_err(|e| e.to_string())?;
        Ok((config, witnessed))
    });
    let (config, witnessed) = match prepared {
        Ok(prepared) => prepared,
        Err(problem) => {
            eprintln!("audit-svc verify: {problem}");
            return ExitCode::from(2);
        }
    };
    let keys = (arguments.given_keys > 0).then_some(arguments.keys);
    let tenants = (!arguments.tenants.is_empty()).then_some(arguments.tenants);
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(verify_database(&config, keys, witnessed, tenants)));
    match outcome {
        Err(error) => {
            eprintln!("audit-svc verify: {error:#}");
            ExitCode::from(2)
        }
        Ok(verdicts) => {
            let mut broken = false;
            for (tenant, verdict) in &verdicts {
                println!("{}", verdict_line(tenant, verdict));
                broken |= verdict.first_broken.is_some();
            }
            if verdicts.is_empty() {
                println!("ok: no tenants to verify");
            }
            if broken {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
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
    let Some(file) = arguments.file.clone() else {
        return verify_database_command(arguments);
    };
    let witnessed = match read_witnesses(&arguments.witnesses) {
        Ok(witnessed) => witnessed,
        Err(problem) => {
            eprintln!("audit-svc verify: {problem}");
            return ExitCode::from(2);
        }
    };
    let open = || File::open(&file).map(BufReader::new);
    match verify_export_witnessed(open, &arguments.keys, witnessed) {
        Err(error) => {
            eprintln!("audit-svc verify: {}: {error}", file.display());
            ExitCode::from(2)
        }
        Ok((tenant, verdict)) => {
            println!("{}", verdict_line(&tenant, &verdict));
            if verdict.first_broken.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

const MIGRATE_USAGE: &str = "usage: audit-svc migrate [--config <file.toml>] (the service's \
configuration: also AUDIT_SVC_CONFIG, and AUDIT_SVC_* variables; migrates with \
database.migration_url when set)";

/// Runs the subcommand with the arguments after `migrate`.
pub fn migrate_command(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{MIGRATE_USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match config_file(args)
        .and_then(|file| load::<Config>(ENV_PREFIX, file.as_deref()).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("audit-svc migrate: {problem}\n{MIGRATE_USAGE}");
            return ExitCode::from(2);
        }
    };
    let login = crate::store::migration_login(&config);
    let started = Instant::now();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(crate::store::migrate_and_heal(&login)));
    match outcome {
        Ok(None) => {
            println!(
                "migrated {} as its migration login; projections current",
                login.redacted_url()
            );
            ExitCode::SUCCESS
        }
        Ok(Some((stale, rebuilt))) => {
            println!(
                "migrated {} as its migration login; projections were stale ({stale}), {}",
                login.redacted_url(),
                rebuilt_summary(&rebuilt, started.elapsed())
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("audit-svc migrate: {error:#}");
            ExitCode::FAILURE
        }
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

/// Migrates with the migration login (which may recreate tables; `audit_appender` may
/// not), then rebuilds.
async fn rebuild_projections(config: &Config) -> anyhow::Result<(Rebuilt, Duration)> {
    let pool = crate::store::migrate(&crate::store::migration_login(config)).await?;
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
