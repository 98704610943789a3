//! The operator CLI as a person runs it: the built `clioctl` binary against a whole stack,
//! configured by a TOML file holding only the tokens each command needs.

use std::path::Path;
use std::time::Duration;

use clio_sim::{AppSpec, Decision, Region};
use harness::{poll_until, token_of};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::stack::{Stack, StackSetup};

const PERSON: &str = "carol@firm.example";

/// What one clioctl run printed and how it ended.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs clioctl with `config` and no `CLIOCTL_*` variable from the test's environment.
pub(crate) async fn clioctl(config: &Path, args: &[&str]) -> Run {
    clioctl_with_env(config, &[], args).await
}

/// Runs clioctl with `config` and only the variables `env`.
pub(crate) async fn clioctl_with_env(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(harness::service_binary("clioctl"))
            .env_clear()
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("clioctl finishes within a minute")
    .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A clioctl config for `stack` with the tokens of `roles` only.
pub(crate) fn config_for(stack: &Stack, roles: &[&str]) -> tempfile::NamedTempFile {
    let mut text = format!(
        "auth = \"http://{}\"\nimport = \"http://{}\"\naudit = \"{}\"\n[tokens]\n",
        stack.auth_address(),
        stack.import_address(),
        // import-svc's audit endpoint: audit-svc itself in a stack without proxies.
        stack.import_config.audit.endpoint,
    );
    for role in roles {
        text.push_str(&format!("{role} = \"{}\"\n", token_of(role)));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clioctl_runs_imports_lists_them_as_json_and_prints_reports() {
    let stack = Stack::start("clioctl", StackSetup::default()).await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    let config = config_for(&stack, &["job_submitter", "compliance"]);

    // Submit and follow to the end: exit 0, the job's counts printed.
    let run = clioctl(
        config.path(),
        &[
            "import",
            "submit",
            "--connection",
            &connection,
            "--resources",
            "contacts",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("submitted job"), "{run:?}");
    assert!(run.stdout.contains("contacts: "), "{run:?}");
    assert!(run.stdout.contains("completed"), "{run:?}");
    // At most one progress line a second, plus status changes: never one line per page.
    let progress_lines = run.stdout.lines().filter(|l| l.contains("fetched")).count();
    assert!(progress_lines < 10, "{run:?}");

    // A job that cannot succeed (the grant has no matters scope) ends the command with 3.
    let run = clioctl(
        config.path(),
        &[
            "import",
            "submit",
            "--connection",
            &connection,
            "--resources",
            "matters",
        ],
    )
    .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("DEAD_LETTERED"), "{run:?}");

    // The list parses as JSON and holds both jobs with their final status.
    let run = clioctl(config.path(), &["import", "list", "--output", "json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let jobs: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let mut statuses: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["completed", "dead_lettered"], "{run:?}");

    // A report prints the connection once its grant has reached audit-svc.
    let report = poll_until(
        "the risk-tier report to show the connection",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let run = clioctl(
                config.path(),
                &["report", "risk-tiers", "--tenant", "firm-1"],
            )
            .await;
            (run.code == 0 && run.stdout.contains(&connection)).then_some(run)
        },
    )
    .await;
    assert!(report.stdout.starts_with("TIER"), "{report:?}");
    assert!(report.stdout.contains(PERSON), "{report:?}");
    assert!(report.stdout.contains("contacts:read"), "{report:?}");

    // The job submitter's config has no operator token: the error names the setting.
    let run = clioctl(config.path(), &["revoke", &connection, "--reason", "test"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("tokens.operator (CLIOCTL_TOKENS__OPERATOR)"),
        "{run:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn clioctl_names_the_missing_token_and_the_unreachable_endpoint() {
    let config = tempfile::NamedTempFile::new().unwrap();
    // Nothing listens on port 1.
    std::fs::write(
        config.path(),
        "import = \"http://127.0.0.1:1\"\naudit = \"http://127.0.0.1:1\"\n\
         [tokens]\njob_submitter = \"some-token\"\n",
    )
    .unwrap();

    let run = clioctl(config.path(), &["report", "zombies", "--tenant", "firm-1"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("tokens.compliance (CLIOCTL_TOKENS__COMPLIANCE)"),
        "{run:?}"
    );

    // A variable supplies the missing token: now the endpoint is what fails.
    let run = clioctl_with_env(
        config.path(),
        &[("CLIOCTL_TOKENS__COMPLIANCE", "from-the-environment")],
        &["report", "zombies", "--tenant", "firm-1"],
    )
    .await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("audit-svc at http://127.0.0.1:1"),
        "{run:?}"
    );

    let run = clioctl(config.path(), &["import", "list"]).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("http://127.0.0.1:1"), "{run:?}");
    assert!(run.stderr.contains("CLIOCTL_IMPORT"), "{run:?}");

    let run = clioctl(config.path(), &["import", "submit"]).await;
    assert_eq!(run.code, 2, "a usage error: {run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clioctl_registers_approves_rejects_and_connects_out_of_band() {
    let stack = Stack::start("clioctl_connect", StackSetup::default()).await;
    let approval = format!("{}/oauth/approval", stack.sim.base_url(Region::Us));
    stack
        .sim
        .admin()
        .register_app(
            Region::Us,
            &AppSpec {
                client_id: "clioctl-app".into(),
                client_secret: "clioctl-secret".into(),
                redirect_uris: vec![approval.clone()],
                permissions: vec!["contacts:read".into()],
            },
        )
        .await
        .unwrap();
    let config = config_for(&stack, &["operator", "compliance", "connector"]);

    // The secret comes from the environment, never the command line.
    let run = clioctl_with_env(
        config.path(),
        &[("CLIOCTL_APP_CLIENT_SECRET", "clioctl-secret")],
        &[
            "app",
            "register",
            "--output",
            "json",
            "--tenant",
            "firm-1",
            "--name",
            "Contacts import",
            "--client-id",
            "clioctl-app",
            "--redirect-uri",
            &approval,
            "--scope",
            "contacts:read=conflict checks",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let app: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(app["status"], "pending_approval", "{run:?}");
    let app_id = app["app_id"].as_str().unwrap().to_owned();
    assert!(!run.stdout.contains("clioctl-secret"), "{run:?}");

    let run = clioctl(config.path(), &["app", "approve", &app_id]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("approved"), "{run:?}");

    // Another registration is refused, with the reason compliance gives.
    let broad = harness::registered_app(
        &stack.sim,
        &mut proto::auth::v1::auth_service_client::AuthServiceClient::new(
            harness::channel(stack.auth_address()).await,
        ),
        &["contacts:write"],
    )
    .await;
    let run = clioctl(
        config.path(),
        &[
            "app",
            "reject",
            "--output",
            "json",
            &broad.app_id,
            "--note",
            "write access is not justified",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let rejected: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(rejected["status"], "rejected", "{run:?}");
    assert_eq!(rejected["rejected_by"], "compliance", "{run:?}");
    assert_eq!(rejected["rejection_note"], "write access is not justified");

    // Out-of-band: clioctl prints Clio's URL, the person consents and pastes the code.
    let mut child = tokio::process::Command::new(harness::service_binary("clioctl"))
        .env_clear()
        .arg("--config")
        .arg(config.path())
        .args(["connect", "--app", &app_id, "--principal", PERSON])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some(url) = line.trim().strip_prefix("http") {
                return format!("http{url}");
            }
        }
        panic!("clioctl ended without printing Clio's URL");
    })
    .await
    .expect("clioctl prints Clio's URL");
    let consent = stack
        .sim
        .admin()
        .consent(&url, 1, Decision::Allow)
        .await
        .unwrap();
    let code = consent
        .page_title
        .expect("the approval page shows the code");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("clioctl connect ends")
        .unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("connected: "), "{rest}");
    assert!(rest.contains("contacts:read"), "{rest}");

    let run = clioctl(
        config.path(),
        &[
            "connection",
            "list",
            "--tenant",
            "firm-1",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let connections: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let connections = connections.as_array().unwrap();
    assert_eq!(connections.len(), 1, "{run:?}");
    assert_eq!(connections[0]["principal"], PERSON);
    assert_eq!(connections[0]["app_id"], app_id.as_str());
    stack.stop().await;
}
