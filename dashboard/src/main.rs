//! The dashboard binary: `dashboard` serves it (config from `--config`/`DASHBOARD_CONFIG`
//! and `DASHBOARD_*`), `dashboard hash-password` turns a password read from standard
//! input into the argon2id string a person's `password_hash` holds.

use std::io::Read;
use std::process::ExitCode;

use dashboard::config::{DashboardConfig, ENV_PREFIX};
use secrecy::SecretString;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "hash-password") {
        return hash_password();
    }
    service_runtime::entrypoint::service_main::<DashboardConfig, _, _>(
        "dashboard",
        ENV_PREFIX,
        dashboard::run,
    )
}

fn hash_password() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        eprintln!("dashboard hash-password: cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let password = SecretString::from(password.trim_end_matches(['\r', '\n']).to_owned());
    match dashboard::people::hash_password(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dashboard hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}
