//! `audit-svc verify --file export.jsonl --public-key <base64>`: checks an export offline,
//! with no database and no trust in the file's own header keys.
//!
//! Exit codes: 0 the chain and every checkpoint verify; 1 the chain is broken (the first
//! broken event is printed); 2 the command line or the file could not be used.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::export::verify_export;
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
