//! The built `clioctl` binary: help lists the command groups, and a bad command line is a
//! usage error (exit 2) that contacts nothing. (Integration tests also make cargo build the
//! binary for a workspace test run, which the e2e tests that drive it rely on.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn clioctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clioctl"))
        .args(args)
        .env_remove("CLIOCTL_CONFIG")
        .output()
        .expect("run clioctl")
}

#[test]
fn help_lists_every_command_group() {
    let help = clioctl(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for group in [
        "app",
        "connect",
        "connection",
        "revoke",
        "offboard",
        "key",
        "import",
        "audit",
        "report",
        "review",
        "demo",
    ] {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&format!("{group} "))),
            "--help does not list `{group}`:\n{text}"
        );
    }
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let unknown = clioctl(&["import", "--bogus"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--bogus"));
}
