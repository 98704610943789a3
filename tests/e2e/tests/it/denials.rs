//! Refused calls are themselves audited (`shared/DESIGN.md`, "Callers and
//! authorisation"): each service records ACCESS_DENIED events of the platform tenant,
//! auth-svc and import-svc through their outboxes, audit-svc directly.

use std::time::Duration;

use harness::{poll_until, token_of, with_bearer};
use proto::audit::v1 as audit;
use proto::common::v1::EventKind;
use proto::imports::v1 as import;

use crate::stack::{Stack, StackSetup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_audits_the_calls_it_refuses() {
    let stack = Stack::start("denials", StackSetup::default()).await;

    // import-svc: no credential at all.
    let refused = stack
        .import()
        .await
        .get_job(import::GetJobRequest {
            job_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // auth-svc: a known caller without the role (a data reader asking for a token).
    let refused = stack
        .auth()
        .await
        .lease_access_token(with_bearer(
            proto::auth::v1::LeaseAccessTokenRequest::default(),
            &token_of("data_reader"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // audit-svc: an operator may not read the compliance log.
    let refused = stack
        .audit()
        .await
        .query(with_bearer(
            audit::QueryRequest {
                tenant: "firm-1".into(),
                ..Default::default()
            },
            &token_of("operator"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let denied = poll_until(
        "three ACCESS_DENIED events",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let events = stack
                .audit_events("platform", &[EventKind::AccessDenied])
                .await;
            (events.len() >= 3).then_some(events)
        },
    )
    .await;
    let seen: Vec<(String, String)> = denied
        .iter()
        .map(|e| {
            (
                e.subject.as_ref().unwrap().id.clone(),
                e.actor.as_ref().unwrap().id.clone(),
            )
        })
        .collect();
    for (method, caller) in [
        (
            "/clio_connect.imports.v1.ImportService/GetJob",
            "unauthenticated",
        ),
        (
            "/clio_connect.auth.v1.AuthService/LeaseAccessToken",
            "data_reader",
        ),
        ("/clio_connect.audit.v1.AuditService/Query", "operator"),
    ] {
        assert!(
            seen.iter()
                .any(|(m, c)| m.ends_with(method.trim_start_matches('/')) && c == caller),
            "no denial of {method} by {caller} in {seen:?}"
        );
    }
    stack.stop().await;
}
