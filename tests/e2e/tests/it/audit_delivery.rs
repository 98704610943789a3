//! Producers never wedge (issue 12): a refused call whose method path is 10 KB, from no
//! credential, becomes an ACCESS_DENIED event auth-svc's outbox fits to audit-svc's limits,
//! and the grant that follows still reaches audit-svc within two seconds.

use std::time::{Duration, Instant};

use harness::poll_until;
use proto::common::v1::{AuditEvent, EventKind};
use tonic::codegen::http::uri::PathAndQuery;

use crate::stack::{Stack, StackSetup};

async fn events_of(stack: &Stack, tenant: &str, kind: EventKind) -> Vec<AuditEvent> {
    stack.audit_events(tenant, &[kind]).await
}

/// Calls `path` on auth-svc without a credential; it is refused whatever the path is.
async fn call_without_credential(stack: &Stack, path: String) -> tonic::Status {
    let channel = harness::channel(stack.auth_address()).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary::<(), (), _>(
        tonic::Request::new(()),
        PathAndQuery::try_from(path).unwrap(),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_10_kb_method_path_does_not_hold_up_the_grants_behind_it() {
    let stack = Stack::start("audit-delivery", StackSetup::default()).await;
    let path = format!(
        "/clio_connect.auth.v1.AuthService/{}",
        "A".repeat(10 * 1024)
    );
    let refused = call_without_credential(&stack, path.clone()).await;
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let connection = stack.connect(&["contacts:read"], "pat@firm-1", 1).await;
    let granted_at = Instant::now();
    let granted = poll_until(
        "the grant recorded by audit-svc",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || async {
            events_of(&stack, "firm-1", EventKind::ConnectionGranted)
                .await
                .into_iter()
                .find(|e| e.subject.as_ref().is_some_and(|s| s.id == connection))
        },
    )
    .await;
    assert!(granted_at.elapsed() < Duration::from_secs(2));
    assert_eq!(
        granted.writer, "auth_writer",
        "bound to auth-svc's credential"
    );

    // The denial itself is recorded too: its path as a digest, its length in the payload.
    let denial = poll_until(
        "the refused call audited",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            events_of(&stack, "platform", EventKind::AccessDenied)
                .await
                .into_iter()
                .find(|e| e.source == "auth-svc")
        },
    )
    .await;
    let subject = &denial.subject.as_ref().unwrap().id;
    assert!(subject.len() <= 256, "{}", subject.len());
    assert!(
        subject.starts_with("/clio_connect.auth.v1.AuthService/AAAA"),
        "{subject}"
    );
    assert!(subject.contains("sha256:"), "{subject}");
    let payload: serde_json::Value = serde_json::from_str(&denial.payload_json).unwrap();
    assert_eq!(
        payload["fitted_to_limits"]["subject.id"].as_u64(),
        Some(path.len() as u64),
        "{payload}"
    );

    // Nothing waits and nothing was refused.
    let health: serde_json::Value = reqwest::get(format!(
        "http://{}/health/audit-outbox",
        stack.auth_address()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(health["quarantined"], 0, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    stack.stop().await;
}

/// import-svc's relay delivers to the real audit-svc: a job refused before it reaches
/// Clio is recorded once, as written to the outbox, in the platform tenant's chain, and
/// the outbox row is marked delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_job_is_recorded_by_audit_svc_in_the_platform_tenant() {
    let stack = Stack::start("audit-dead-letter", StackSetup::default()).await;
    let platform = stack.import_config.audit.platform_tenant.clone();
    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000cc";
    stack
        .publish_json(&serde_json::json!({
            "jobId": job_id,
            "connectionId": "c-3",
            "resources": [],
        }))
        .await;

    let recorded = poll_until(
        "the dead-lettered job recorded by audit-svc",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            events_of(&stack, &platform, EventKind::ImportDeadLettered)
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(recorded.subject.as_ref().unwrap().id, job_id);
    assert_eq!(recorded.source, "import-svc");
    assert!(
        recorded.reason.starts_with("resources:"),
        "{}",
        recorded.reason
    );

    let written: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT event FROM audit_outbox WHERE kind = $1")
        .bind(EventKind::ImportDeadLettered.as_str_name())
        .fetch_all(&mut stack.import_database.connect().await)
        .await
        .unwrap();
    assert_eq!(written.len(), 1, "written once");
    let written = <AuditEvent as prost::Message>::decode(written[0].0.as_slice()).unwrap();
    assert_eq!(written.event_id, recorded.event_id);
    assert_eq!(written.reason, recorded.reason);
    poll_until(
        "the outbox row marked delivered",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL")
                    .fetch_one(&mut stack.import_database.connect().await)
                    .await
                    .unwrap();
            (pending == 0).then_some(())
        },
    )
    .await;
    stack.stop().await;
}

/// auth-svc's relay and the real audit-svc: events auth-svc commits while audit-svc is
/// unreachable wait in its outbox, then each is recorded once, in commit order, in its
/// tenant's chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_svc_events_committed_while_audit_svc_is_unreachable_arrive_in_commit_order() {
    let setup = StackSetup {
        auth_audit_proxy: true,
        ..StackSetup::default()
    };
    let stack = Stack::start("auth-audit-cut", setup).await;
    let proxy = stack.auth_audit_proxy.as_ref().unwrap();
    proxy.cut();
    stack.connect(&["contacts:read"], "wes@firm-1", 1).await;

    let outbox: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT tenant, event FROM audit_outbox ORDER BY seq")
            .fetch_all(&mut stack.auth_database().connect().await)
            .await
            .unwrap();
    let committed: Vec<AuditEvent> = outbox
        .iter()
        .map(|(_, bytes)| <AuditEvent as prost::Message>::decode(bytes.as_slice()).unwrap())
        .collect();
    let tenant = committed
        .iter()
        .find(|e| e.kind() == EventKind::ConnectionGranted)
        .expect("the grant is in the outbox")
        .tenant
        .clone();
    let expected: Vec<String> = committed
        .iter()
        .filter(|e| e.tenant == tenant)
        .map(|e| e.event_id.clone())
        .collect();
    assert!(
        events_of(&stack, &tenant, EventKind::ConnectionGranted)
            .await
            .is_empty(),
        "nothing got through the cut"
    );

    proxy.restore();
    let recorded = poll_until(
        "auth-svc's events recorded by audit-svc",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let answer = stack.audit_events(&tenant, &[]).await;
            let mut events: Vec<AuditEvent> = answer
                .into_iter()
                .filter(|e| e.source == "auth-svc")
                .collect();
            events.sort_by_key(|e| e.sequence);
            (events.len() >= expected.len()).then_some(events)
        },
    )
    .await;
    let recorded: Vec<String> = recorded.into_iter().map(|e| e.event_id).collect();
    assert_eq!(recorded, expected, "each once, chained in commit order");
    stack.stop().await;
}
