//! The service binaries' command lines: `--help` and `--version` answer and exit 0, and an
//! argument a binary does not know is refused (exit code 2, clap's message) before the
//! service starts, so a typo never leaves a service listening.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::services::Service;

/// A port nothing listens on (bound, then released).
fn free_address() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs `kind`'s binary with `args`, configured to listen on `listen` (a service that
/// wrongly starts would serve there). Panics, killing it, if it is still running after
/// 20 s: it started.
async fn run(kind: Service, args: &[&str], listen: SocketAddr) -> Output {
    let prefix = kind.env_prefix();
    let child = Command::new(harness::service_binary(kind.binary()))
        .args(args)
        .env_remove(format!("{prefix}CONFIG"))
        .env(format!("{prefix}SERVICE__LISTEN"), listen.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(output) => output.unwrap(),
        Err(_) => panic!("{kind:?} {args:?} is still running: it started instead of exiting"),
    }
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

#[tokio::test]
async fn help_lists_the_config_option_and_exits_0() {
    for kind in Service::ALL {
        let output = run(kind, &["--help"], free_address()).await;
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{kind:?}: {stdout}");
        assert!(
            stdout.contains(&format!("Usage: {}", kind.binary())),
            "{kind:?}: {stdout}"
        );
        assert!(stdout.contains("--config <FILE>"), "{kind:?}: {stdout}");
        assert!(
            stdout.contains(&format!("{}CONFIG", kind.env_prefix())),
            "{kind:?}: {stdout}"
        );
    }
}

#[tokio::test]
async fn version_prints_the_name_and_version_and_exits_0() {
    for kind in Service::ALL {
        let output = run(kind, &["--version"], free_address()).await;
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{kind:?}: {stdout}");
        assert_eq!(
            stdout.trim(),
            format!("{} {}", kind.binary(), env!("CARGO_PKG_VERSION")),
        );
    }
}

#[tokio::test]
async fn an_unknown_argument_exits_2_and_nothing_listens() {
    for kind in Service::ALL {
        for args in [&["--bogus"][..], &["--config"], &["serve"]] {
            let listen = free_address();
            let output = run(kind, args, listen).await;
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{kind:?} {args:?}: {stderr}");
            assert!(stderr.starts_with("error: "), "{kind:?} {args:?}: {stderr}");
            assert!(
                stderr.contains("try '--help'"),
                "{kind:?} {args:?}: {stderr}"
            );
            assert!(
                !text(&output.stdout).contains("starting"),
                "{kind:?} {args:?} started"
            );
            assert!(
                tokio::net::TcpStream::connect(listen).await.is_err(),
                "{kind:?} {args:?}: something listens on {listen}"
            );
        }
        let output = run(kind, &["--bogus"], free_address()).await;
        assert!(
            text(&output.stderr).contains("unexpected argument '--bogus'"),
            "{kind:?}: {}",
            text(&output.stderr)
        );
    }
}

#[tokio::test]
async fn audit_svc_subcommands_answer_help_and_refuse_unknown_flags() {
    let listen = free_address();
    for (subcommand, flags) in [
        (
            "verify",
            &[
                "--file",
                "--public-key",
                "--witness",
                "--config",
                "--tenant",
            ][..],
        ),
        ("migrate", &["--config"]),
        ("rebuild-projections", &["--config"]),
    ] {
        let output = run(Service::Audit, &[subcommand, "--help"], listen).await;
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{subcommand}: {stdout}");
        for flag in flags {
            assert!(stdout.contains(flag), "{subcommand} {flag}: {stdout}");
        }
        let output = run(Service::Audit, &[subcommand, "--bogus"], listen).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{subcommand}: {}",
            text(&output.stderr)
        );
    }
    // verify without what to check: clap names the missing argument.
    let output = run(Service::Audit, &["verify"], listen).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--file"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn the_config_file_variable_names_the_file_and_is_not_a_setting() {
    // A file whose one setting is refused: the error names it, so the file was read
    // (and `<PREFIX>CONFIG` itself was not taken for an unknown setting).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[service]\nhealth_interval_ms = 0\n").unwrap();
    for kind in Service::ALL {
        let prefix = kind.env_prefix();
        let child = Command::new(harness::service_binary(kind.binary()))
            .env(format!("{prefix}CONFIG"), file.path())
            .env(
                format!("{prefix}SERVICE__LISTEN"),
                free_address().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("start-up is refused")
            .unwrap();
        let stderr = text(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{kind:?}: {stderr}");
        assert!(stderr.contains("health_interval_ms"), "{kind:?}: {stderr}");
        assert!(!stderr.contains("unknown field"), "{kind:?}: {stderr}");
    }
}
