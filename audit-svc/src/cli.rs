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

use ed25519_dalek::VerifyingKey;
use service_runtime::config::load;
use service_runtime::entrypoint::ConfigArg;

use crate::chain::{Checkpoint, Verdict};
use crate::config::{Config, ENV_PREFIX};
use crate::export::verify_export_witnessed;
use crate::projections::{self, Rebuilt};
use crate::signing::{Signer, TrustedKeys, public_key_from_base64};
use crate::verify::verify_witnessed;
use crate::witness::read_witness;

/// The binary's command line: the service (no subcommand) or one subcommand.
#[derive(Debug, clap::Parser)]
#[command(
    name = "audit-svc",
    version,
    about = "audit-svc: the clio-connect audit log (a gRPC service without a subcommand)",
    after_help = "Without a subcommand: serves until SIGTERM or ctrl-c. Exit codes: 0 \
stopped; 1 a runtime failure; 2 the command line or the configuration was refused.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The service's configuration (no subcommand).
    #[command(flatten)]
    pub service: ConfigArg,
}

impl Cli {
    /// Parses `args` (the binary's name first). `Err` is clap's answer to print and exit with:
    /// help or version (exit code 0), or a refused command line (2).
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        service_runtime::entrypoint::parse_with(
            <Self as clap::CommandFactory>::command(),
            ENV_PREFIX,
            args,
        )
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check an export offline (--file), or the database against witness files
    ///
    /// With --file: the export alone, no database and no trust in its header's keys. Without:
    /// the database (the service's configuration, as the service login) against the witness
    /// files. Exit codes: 0 verified; 1 a chain is broken (the first broken event of each
    /// broken tenant is printed); 2 the command line, a file, the configuration or the
    /// database could not be used.
    Verify(VerifyArgs),
    /// Migrate as the migration login (before the service starts)
    ///
    /// With the service's configuration and database.migration_url (else
    /// service.database.url): runs the migrations and rebuilds the projections if they cannot
    /// be trusted, as the service does at start-up unless database.migrate_at_start is false.
    /// Exit codes: 0 done; 1 the database failed; 2 the command line or the configuration was
    /// refused.
    Migrate(ConfigArg),
    /// Rebuild the compliance projections from the log
    ///
    /// Migrates (as the migration login), recreates dropped projection tables and rebuilds
    /// every projection, whether or not it looked stale. Exit codes: 0 rebuilt; 1 the
    /// database failed; 2 the command line or the configuration was refused.
    RebuildProjections(ConfigArg),
}

/// Runs a subcommand to completion.
pub fn run_command(command: Command) -> ExitCode {
    match command {
        Command::Verify(arguments) => verify_command(arguments),
        Command::Migrate(arguments) => migrate_command(&arguments),
        Command::RebuildProjections(arguments) => rebuild_projections_command(&arguments),
    }
}

/// `audit-svc verify`'s arguments: an export to check, or witness files to check the
/// database against.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["file", "witness"]).multiple(true)))]
pub struct VerifyArgs {
    /// An export (JSON lines) to check offline, with no database; needs --public-key
    #[arg(
        long,
        value_name = "EXPORT.JSONL",
        requires = "public_key",
        conflicts_with_all = ["config", "tenant"]
    )]
    file: Option<PathBuf>,
    /// A public key (base64 Ed25519) checkpoints may be signed with; repeat for retired keys.
    /// Required with --file (the header's own keys are not trusted); for the database the
    /// configuration's keys unless given
    #[arg(long = "public-key", value_name = "BASE64", value_parser = parse_public_key)]
    public_key: Vec<VerifyingKey>,
    /// A witness file of checkpoints (repeatable): with --file, the checkpoints of its range;
    /// without, the database's chains are checked against them
    #[arg(long, value_name = "WITNESS.JSONL")]
    witness: Vec<PathBuf>,
    /// The service's configuration, to check the database
    #[command(flatten)]
    config: ConfigArg,
    /// A tenant to check in the database (repeatable); default every tenant
    #[arg(long, value_name = "TENANT")]
    tenant: Vec<String>,
}

fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    public_key_from_base64(text).ok_or_else(|| "not a base64 Ed25519 public key".to_owned())
}

impl VerifyArgs {
    fn trusted_keys(&self) -> TrustedKeys {
        let mut keys = TrustedKeys::default();
        for key in &self.public_key {
            keys.add(*key);
        }
        keys
    }
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

fn verify_database_command(arguments: VerifyArgs) -> ExitCode {
    let prepared = read_witnesses(&arguments.witness).and_then(|witnessed| {
        let file = arguments.config.file(ENV_PREFIX);
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
    let keys = (!arguments.public_key.is_empty()).then(|| arguments.trusted_keys());
    let tenants = (!arguments.tenant.is_empty()).then_some(arguments.tenant);
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

/// Runs `audit-svc verify`.
fn verify_command(arguments: VerifyArgs) -> ExitCode {
    let Some(file) = arguments.file.clone() else {
        return verify_database_command(arguments);
    };
    let witnessed = match read_witnesses(&arguments.witness) {
        Ok(witnessed) => witnessed,
        Err(problem) => {
            eprintln!("audit-svc verify: {problem}");
            return ExitCode::from(2);
        }
    };
    let open = || File::open(&file).map(BufReader::new);
    match verify_export_witnessed(open, &arguments.trusted_keys(), witnessed) {
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

/// Runs `audit-svc migrate`.
fn migrate_command(arguments: &ConfigArg) -> ExitCode {
    let config = match load::<Config>(ENV_PREFIX, arguments.file(ENV_PREFIX).as_deref()) {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("audit-svc migrate: {problem}");
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

/// Runs `audit-svc rebuild-projections`.
fn rebuild_projections_command(arguments: &ConfigArg) -> ExitCode {
    // The same layers and checks as the service, so a refusal names the same field.
    let config = match load::<Config>(ENV_PREFIX, arguments.file(ENV_PREFIX).as_deref()) {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("audit-svc rebuild-projections: {problem}");
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use base64::Engine;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args([&["audit-svc"], args].concat())
    }

    fn key() -> String {
        let key = Signer::from_seed(&[7; 32]).public_key();
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    }

    fn verify(args: &[&str]) -> Result<VerifyArgs, clap::Error> {
        match parse(&[&["verify"], args].concat())?.command {
            Some(Command::Verify(arguments)) => Ok(arguments),
            other => panic!("not verify: {other:?}"),
        }
    }

    #[test]
    fn no_subcommand_is_the_service_with_its_config_file() {
        let cli = parse(&["--config", "audit.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.service.config, Some(PathBuf::from("audit.toml")));
    }

    #[test]
    fn verify_takes_an_export_its_keys_and_witnesses() {
        let key = key();
        let arguments = verify(&[
            "--file=export.jsonl",
            "--public-key",
            &key,
            "--public-key",
            &key,
            "--witness",
            "a.jsonl",
            "--witness",
            "b.jsonl",
        ])
        .unwrap();
        assert_eq!(arguments.file, Some(PathBuf::from("export.jsonl")));
        assert_eq!(arguments.public_key.len(), 2);
        assert_eq!(arguments.witness, ["a.jsonl", "b.jsonl"].map(PathBuf::from));

        let arguments = verify(&[
            "--witness",
            "a.jsonl",
            "--config",
            "audit.toml",
            "--tenant",
            "firm-a",
            "--tenant",
            "firm-b",
        ])
        .unwrap();
        assert_eq!(arguments.file, None);
        assert!(arguments.public_key.is_empty());
        assert_eq!(arguments.config.config, Some(PathBuf::from("audit.toml")));
        assert_eq!(arguments.tenant, ["firm-a", "firm-b"]);
    }

    #[test]
    fn verify_refuses_what_it_cannot_check_with_exit_code_2() {
        let key = key();
        for args in [
            &[][..],
            &["--file", "export.jsonl"],
            &["--file", "export.jsonl", "--public-key", "not-a-key"],
            &[
                "--file",
                "x",
                "--public-key",
                &key,
                "--config",
                "audit.toml",
            ],
            &["--file", "x", "--public-key", &key, "--tenant", "firm-a"],
            &["--witness"],
            &["--witness", "a.jsonl", "--bogus"],
        ] {
            let error = verify(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }

    #[test]
    fn migrate_and_rebuild_take_only_a_config_file() {
        for name in ["migrate", "rebuild-projections"] {
            let command = parse(&[name, "--config", "audit.toml"]).unwrap().command;
            let config = match command {
                Some(Command::Migrate(config) | Command::RebuildProjections(config)) => config,
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(config.config, Some(PathBuf::from("audit.toml")));
            assert_eq!(parse(&[name, "--file", "x"]).unwrap_err().exit_code(), 2);
        }
        // A service option before a subcommand would be silently ignored: refused.
        let error = parse(&["--config", "audit.toml", "migrate"]).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
    }

    #[test]
    fn help_lists_the_subcommands_and_the_variable() {
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let text = help.to_string();
        for expected in [
            "verify",
            "migrate",
            "rebuild-projections",
            "--config <FILE>",
            "AUDIT_SVC_CONFIG",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        let help = parse(&["verify", "--help"]).unwrap_err().to_string();
        for expected in [
            "--file",
            "--public-key",
            "--witness",
            "--tenant",
            "AUDIT_SVC_CONFIG",
        ] {
            assert!(help.contains(expected), "{expected}: {help}");
        }
        assert_eq!(parse(&["--bogus"]).unwrap_err().exit_code(), 2);
    }
}
