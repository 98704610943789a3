//! Events are bound to their writer: each audit_writer credential records only the sources
//! and kinds its grant lists (anything else is PERMISSION_DENIED and itself audited), and
//! the credential's name is stored in every event, inside the hash Verify checks.

use std::time::Duration;

use chrono::Utc;
use harness::{TestDatabase, poll_until, with_bearer};
use proto::audit::v1::{QueryRequest, RecordRequest, VerifyRequest};
use proto::common::v1 as pb;
use sqlx::Connection;
use tonic::Code;

use crate::support::{Ev, RunningAudit, Setup, compliance, start};

const TENANT: &str = "firm-a";

async fn record_as(
    audit: &RunningAudit,
    caller: &str,
    events: Vec<pb::AuditEvent>,
) -> Result<proto::audit::v1::RecordResponse, tonic::Status> {
    audit
        .audit()
        .await
        .record(with_bearer(
            RecordRequest {
                events,
                ..Default::default()
            },
            &harness::token_of(caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn from(source: &str, kind: pb::EventKind) -> pb::AuditEvent {
    let mut event = Ev::new(kind, TENANT, Utc::now()).build();
    event.source = source.into();
    event
}

async fn query(audit: &RunningAudit, tenant: &str, kind: pb::EventKind) -> Vec<pb::AuditEvent> {
    audit
        .audit()
        .await
        .query(compliance(QueryRequest {
            tenant: tenant.into(),
            kinds: vec![kind as i32],
            ..QueryRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .events
}

#[tokio::test]
async fn import_svc_s_credential_cannot_speak_for_auth_svc_or_attest_a_review() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;

    let forgeries = [
        (
            from("auth-svc", pb::EventKind::ConnectionRevoked),
            "events[1].source",
        ),
        (
            from("import-svc", pb::EventKind::ConnectionRevoked),
            "events[1].kind",
        ),
        (
            from("import-svc", pb::EventKind::ReviewAttested),
            "events[1].kind",
        ),
    ];
    for (forged, field) in &forgeries {
        // A legitimate event in front: the whole request is refused, nothing is stored.
        let legitimate = from("import-svc", pb::EventKind::ImportStarted);
        let refused = record_as(&audit, "import_writer", vec![legitimate, forged.clone()])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().starts_with(field),
            "{field}: {}",
            refused.message()
        );
        assert!(
            refused.message().contains("import_writer"),
            "{}",
            refused.message()
        );
    }
    assert!(
        query(&audit, TENANT, pb::EventKind::ImportStarted)
            .await
            .is_empty()
    );
    assert!(
        query(&audit, TENANT, pb::EventKind::ConnectionRevoked)
            .await
            .is_empty()
    );

    // Each refusal is itself an ACCESS_DENIED event of the platform tenant, naming the
    // credential, written by audit-svc.
    let denials = poll_until(
        "the refused writes are audited",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let denials = query(&audit, "platform", pb::EventKind::AccessDenied).await;
            (denials.len() == forgeries.len()).then_some(denials)
        },
    )
    .await;
    for denial in &denials {
        let actor = denial.actor.as_ref().unwrap();
        assert_eq!(actor.id, "import_writer");
        assert_eq!(
            denial.subject.as_ref().unwrap().id,
            "/clio_connect.audit.v1.AuditService/Record"
        );
        assert!(denial.reason.contains("events[1]"), "{}", denial.reason);
        assert_eq!(denial.source, "audit-svc");
        assert_eq!(denial.writer, "audit-svc");
        assert!(denial.payload_json.contains("PermissionDenied"));
    }

    // The same events from their own services' credentials are recorded.
    record_as(
        &audit,
        "auth_writer",
        vec![from("auth-svc", pb::EventKind::ConnectionRevoked)],
    )
    .await
    .unwrap();
    record_as(
        &audit,
        "import_writer",
        vec![from("import-svc", pb::EventKind::ImportStarted)],
    )
    .await
    .unwrap();
    // Not even auth-svc's credential records a review: only ComplianceService does.
    let refused = record_as(
        &audit,
        "auth_writer",
        vec![from("auth-svc", pb::EventKind::ReviewAttested)],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    audit.stop().await;
}

#[tokio::test]
async fn a_credential_without_a_grant_records_nothing() {
    let database = TestDatabase::create().await;
    let mut config = crate::support::config(&database, &Setup::default());
    config.writers.retain(|g| g.caller != "import_writer");
    let audit = crate::support::start_configured(config, Setup::default()).await;
    let refused = record_as(
        &audit,
        "import_writer",
        vec![from("import-svc", pb::EventKind::ImportStarted)],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // About the credential, not an event: the message names no event, so a producer's
    // relay keeps its events and retries instead of quarantining them.
    assert!(
        refused.message().starts_with("events: "),
        "{}",
        refused.message()
    );
    audit.stop().await;
}

#[tokio::test]
async fn the_writer_is_stored_in_every_event_and_covered_by_verify() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let recorded = record_as(
        &audit,
        "auth_writer",
        vec![
            from("auth-svc", pb::EventKind::ConnectionGranted),
            from("auth-svc", pb::EventKind::ConnectionRevoked),
        ],
    )
    .await
    .unwrap();
    assert!(recorded.events.iter().all(|e| e.writer == "auth_writer"));
    // A writer in the request is not believed: the credential decides.
    let mut claimed = from("import-svc", pb::EventKind::ImportStarted);
    claimed.writer = "auth_writer".into();
    let stored = record_as(&audit, "import_writer", vec![claimed])
        .await
        .unwrap();
    assert_eq!(stored.events[0].writer, "import_writer");

    let mut db = database.connect().await;
    let writers: Vec<String> =
        sqlx::query_scalar("SELECT writer FROM events WHERE tenant = $1 ORDER BY sequence")
            .bind(TENANT)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(writers, ["auth_writer", "auth_writer", "import_writer"]);

    let verify = || async {
        audit
            .audit()
            .await
            .verify(compliance(VerifyRequest {
                tenant: TENANT.into(),
                ..VerifyRequest::default()
            }))
            .await
            .unwrap()
            .into_inner()
    };
    assert!(verify().await.ok);

    // Someone with database rights makes import-svc's event look like auth-svc's.
    let mut tx = db.begin().await.unwrap();
    for statement in [
        "ALTER TABLE events DISABLE TRIGGER USER",
        "UPDATE events SET writer = 'auth_writer' WHERE tenant = 'firm-a' AND sequence = 3",
        "ALTER TABLE events ENABLE TRIGGER USER",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let verdict = verify().await;
    assert!(!verdict.ok, "{verdict:?}");
    let broken = verdict.first_broken.unwrap();
    assert_eq!(broken.sequence, 3);
    assert!(broken.reason.starts_with("edited"), "{}", broken.reason);
    audit.stop().await;
}
