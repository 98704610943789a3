//! Producers never wedge (issue 12): a refused call whose method path is 10 KB, from no
//! credential, becomes an ACCESS_DENIED event auth-svc's outbox fits to audit-svc's limits,
//! and the grant that follows still reaches audit-svc within two seconds.

use std::time::{Duration, Instant};

use harness::{poll_until, token_of, with_bearer};
use proto::audit::v1 as audit;
use proto::common::v1::{AuditEvent, EventKind};
use tonic::codegen::http::uri::PathAndQuery;

use crate::stack::{Stack, StackSetup};

async fn events_of(stack: &Stack, tenant: &str, kind: EventKind) -> Vec<AuditEvent> {
    stack
        .audit()
        .await
        .query(with_bearer(
            audit::QueryRequest {
                tenant: tenant.into(),
                kinds: vec![kind as i32],
                ..Default::default()
            },
            &token_of("compliance"),
        ))
        .await
        .map(|r| r.into_inner().events)
        .unwrap_or_default()
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
