//! Prometheus metrics end to end: after an import, every service's `/metrics` has each
//! family the dashboard uses, the values say what happened (records written, the job
//! completed, RPCs timed, events delivered and appended), no label carries an id or a
//! token, and every metric the Grafana dashboard queries is one a service exports.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use harness::{poll_until, token_of};
use proto::audit::v1 as audit_pb;
use proto::auth::v1 as auth_pb;
use proto::imports::v1 as import_pb;
use tonic::Code;

use crate::import_jobs::{assert_completed, contacts_only, sim_with};
use crate::stack::{Stack, StackSetup, full_job};

const CONTACTS: u64 = 300;

/// The families each service exports (as in `# TYPE` lines: counters without `_total`).
const SHARED: &[&str] = &[
    "rpc_calls",
    "rpc_errors",
    "rpc_duration_seconds",
    "rpc_caller_auth",
];
const OUTBOX: &[&str] = &[
    "audit_outbox_pending",
    "audit_outbox_oldest_pending_seconds",
    "audit_outbox_quarantined",
    "audit_outbox_delivered",
    "audit_outbox_delivery_failures",
];
const IMPORT: &[&str] = &[
    "jobs_ended",
    "jobs_running",
    "records_written",
    "records_deleted",
    "records_skipped",
    "clio_calls",
    "clio_call_duration_seconds",
    "clio_rate_limit_waits",
    "clio_rate_limit_wait_seconds",
    "amqp_connected",
    "token_leases",
];
const AUTH: &[&str] = &[
    "token_leases",
    "token_refreshes",
    "clio_calls",
    "clio_call_duration_seconds",
    "key_rotation_undecryptable_secrets",
];
const AUDIT: &[&str] = &[
    "events_appended",
    "events_duplicate",
    "chain_events",
    "chains",
    "chain_uncheckpointed_events",
    "chain_verifications",
];

async fn scrape(address: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exported), if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn at_least(scrape: &str, series: &str, minimum: f64) {
    let found = value(scrape, series).unwrap_or_else(|| panic!("no {series} in\n{scrape}"));
    assert!(
        found >= minimum,
        "{series} is {found}, expected ≥ {minimum}"
    );
}

fn assert_families(scrape: &str, prefix: &str, families: &[&str]) {
    for family in families {
        assert!(
            scrape.contains(&format!("# TYPE {prefix}_{family} ")),
            "{prefix}_{family} missing from\n{scrape}"
        );
    }
}

/// Every sample name a scrape can hold: its samples', and for each family in a `# TYPE`
/// line the names its type exports (a family without samples yet still counts).
fn exported_names(scrapes: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrapes.iter().flat_map(|s| s.lines()) {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The metric names in the dashboard's queries: every identifier starting with a
/// service's prefix.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/clio-connect.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"]
        .as_array()
        .expect("a dashboard has panels");
    let mut names = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target has a PromQL expr");
            let identifiers = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            names.extend(
                identifiers
                    .filter(|word| {
                        ["auth_svc_", "import_svc_", "audit_svc_"]
                            .iter()
                            .any(|prefix| word.starts_with(prefix))
                    })
                    .map(str::to_owned),
            );
        }
    }
    names
}

/// The three scrapes once the job's audit events went through import-svc's outbox to
/// audit-svc: import-svc's, auth-svc's and audit-svc's.
async fn scrapes_after_delivery(stack: &Stack) -> (String, String, String) {
    let audit_address: SocketAddr = stack
        .import_config
        .audit
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let completed = "audit_svc_events_appended_total{kind=\"IMPORT_COMPLETED\"}";
    let audit = poll_until(
        "the job's end to be appended by audit-svc",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let audit = scrape(audit_address).await;
            value(&audit, completed)
                .is_some_and(|n| n >= 1.0)
                .then_some(audit)
        },
    )
    .await;
    let import = poll_until(
        "import-svc's outbox to be empty",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let import = scrape(stack.import_address()).await;
            (value(&import, "import_svc_audit_outbox_pending") == Some(0.0)).then_some(import)
        },
    )
    .await;
    (import, scrape(stack.auth_address()).await, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_exports_what_the_dashboard_reads_after_an_import() {
    let stack = Stack::start(
        "metrics",
        StackSetup {
            sim: sim_with(contacts_only(CONTACTS)),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack
        .connect(&["contacts:read"], "alice@firm.example", 1)
        .await;
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    assert_completed(&stack.finished(&job_id, Duration::from_secs(60)).await);
    refuse_a_call_to_each(&stack).await;
    let (import, auth, audit) = scrapes_after_delivery(&stack).await;

    assert_families(&import, "import_svc", SHARED);
    assert_families(&import, "import_svc", OUTBOX);
    assert_families(&import, "import_svc", IMPORT);
    assert_families(&auth, "auth_svc", SHARED);
    assert_families(&auth, "auth_svc", OUTBOX);
    assert_families(&auth, "auth_svc", AUTH);
    assert_families(&audit, "audit_svc", SHARED);
    assert_families(&audit, "audit_svc", AUDIT);

    check_import_values(&import);
    check_auth_values(&auth);
    check_audit_values(&audit);

    // Labels are methods, codes, statuses and resources: never an id or a credential.
    for scrape in [&import, &auth, &audit] {
        for secret in [
            job_id.clone(),
            connection.clone(),
            token_of("operator"),
            token_of("job_submitter"),
            token_of("import"),
            token_of("import_writer"),
        ] {
            assert!(!scrape.contains(&secret), "{secret} in a label:\n{scrape}");
        }
    }

    let exported = exported_names(&[&import, &auth, &audit]);
    let queried = dashboard_metrics();
    assert!(queried.len() > 20, "{queried:?}");
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no service exports: {unknown:?}"
    );
    stack.stop().await;
}

/// One call to each service without a credential, refused UNAUTHENTICATED: the error
/// families get a series, and the refusal is counted where the caller saw it.
async fn refuse_a_call_to_each(stack: &Stack) {
    let import = stack
        .import()
        .await
        .get_job(import_pb::GetJobRequest {
            job_id: "not-a-job".into(),
        })
        .await;
    let auth = stack
        .auth()
        .await
        .get_connection(auth_pb::GetConnectionRequest {
            connection_id: "not-a-connection".into(),
        })
        .await;
    let audit = stack
        .audit()
        .await
        .query(audit_pb::QueryRequest::default())
        .await;
    assert_eq!(import.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(auth.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(audit.unwrap_err().code(), Code::Unauthenticated);
}

/// The refused call of [`refuse_a_call_to_each`] to `method`, in `prefix`'s scrape.
fn refusal_counted(scrape: &str, prefix: &str, method: &str) {
    let method = format!("method=\"{method}\"");
    for family in ["rpc_calls_total", "rpc_errors_total"] {
        at_least(
            scrape,
            &format!("{prefix}_{family}{{{method},code=\"UNAUTHENTICATED\"}}"),
            1.0,
        );
    }
    at_least(
        scrape,
        &format!("{prefix}_rpc_caller_auth_total{{{method},outcome=\"unauthenticated\"}}"),
        1.0,
    );
}

fn check_import_values(import: &str) {
    refusal_counted(
        import,
        "import_svc",
        "/clio_connect.imports.v1.ImportService/GetJob",
    );
    at_least(
        import,
        "import_svc_records_written_total{resource=\"contacts\"}",
        CONTACTS as f64,
    );
    at_least(
        import,
        "import_svc_jobs_ended_total{status=\"completed\"}",
        1.0,
    );
    assert_eq!(value(import, "import_svc_jobs_running"), Some(0.0));
    assert_eq!(value(import, "import_svc_amqp_connected"), Some(1.0));
    // 300 contacts, 200 to a page.
    at_least(
        import,
        "import_svc_clio_calls_total{endpoint=\"contacts\",class=\"2xx\",code=\"200\"}",
        2.0,
    );
    at_least(
        import,
        "import_svc_token_leases_total{outcome=\"granted\"}",
        1.0,
    );
    at_least(import, "import_svc_audit_outbox_delivered_total", 2.0);
    assert_eq!(
        value(import, "import_svc_audit_outbox_quarantined"),
        Some(0.0)
    );
    let submit = "method=\"/clio_connect.imports.v1.ImportService/SubmitJob\"";
    at_least(
        import,
        &format!("import_svc_rpc_calls_total{{{submit},code=\"OK\"}}"),
        1.0,
    );
    let get_job = "method=\"/clio_connect.imports.v1.ImportService/GetJob\"";
    at_least(
        import,
        &format!("import_svc_rpc_duration_seconds_count{{{get_job}}}"),
        1.0,
    );
}

fn check_auth_values(auth: &str) {
    refusal_counted(
        auth,
        "auth_svc",
        "/clio_connect.auth.v1.AuthService/GetConnection",
    );
    let lease = "method=\"/clio_connect.auth.v1.AuthService/LeaseAccessToken\"";
    at_least(
        auth,
        &format!("auth_svc_rpc_calls_total{{{lease},code=\"OK\"}}"),
        1.0,
    );
    at_least(
        auth,
        &format!("auth_svc_rpc_duration_seconds_count{{{lease}}}"),
        1.0,
    );
    at_least(
        auth,
        &format!("auth_svc_rpc_caller_auth_total{{{lease},outcome=\"allowed\"}}"),
        1.0,
    );
    at_least(
        auth,
        "auth_svc_token_leases_total{outcome=\"granted\"}",
        1.0,
    );
    // The connection's code exchange.
    at_least(
        auth,
        "auth_svc_clio_calls_total{endpoint=\"oauth_token\",class=\"2xx\",code=\"200\"}",
        1.0,
    );
}

fn check_audit_values(audit: &str) {
    refusal_counted(
        audit,
        "audit_svc",
        "/clio_connect.audit.v1.AuditService/Query",
    );
    let record = "method=\"/clio_connect.audit.v1.AuditService/Record\"";
    at_least(
        audit,
        &format!("audit_svc_rpc_calls_total{{{record},code=\"OK\"}}"),
        1.0,
    );
    at_least(
        audit,
        "audit_svc_events_appended_total{kind=\"IMPORT_STARTED\"}",
        1.0,
    );
    // Both producers' events: the connection's, the lease's, the job's.
    at_least(audit, "audit_svc_chain_events", 3.0);
    at_least(audit, "audit_svc_chains", 1.0);
}
