//! Audit events are written to the outbox in the same transaction as the job change they
//! record: refused messages, cancelled jobs. (Events of jobs that reach Clio, started and
//! completed or failed, need auth-svc and the simulator, and delivery to a real audit-svc
//! needs a second service: the e2e suite covers those.)

use std::time::Duration;

use harness::{channel, poll_until, token_of, with_bearer};
use prost::Message;
use proto::common::v1::{AuditEvent, EventKind, actor, subject};
use proto::imports::v1 as pb;
use proto::imports::v1::import_service_client::ImportServiceClient;

use crate::support::{PLATFORM_TENANT, RunningImport, Setup, start};

/// Every event in the outbox, oldest first, decoded from its protobuf column.
async fn outbox(import: &RunningImport) -> Vec<AuditEvent> {
    let mut db = import.database.connect().await;
    let rows: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT kind, tenant, event FROM audit_outbox ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(kind, tenant, bytes)| {
            let event = AuditEvent::decode(bytes.as_slice()).unwrap();
            assert_eq!(kind, event.kind().as_str_name(), "kind column matches");
            assert_eq!(tenant, event.tenant, "tenant column matches");
            event
        })
        .collect()
}

/// Waits until the outbox holds `count` events of `kind`.
async fn wait_for(import: &RunningImport, kind: EventKind, count: usize) -> Vec<AuditEvent> {
    poll_until(
        &format!("{count} {kind:?} events in the outbox"),
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let events: Vec<AuditEvent> = outbox(import)
                .await
                .into_iter()
                .filter(|e| e.kind() == kind)
                .collect();
            (events.len() >= count).then_some(events)
        },
    )
    .await
}

#[tokio::test]
async fn dead_lettered_messages_are_audited_with_their_reason() {
    let import = start("audit-dlq", Setup::default()).await;

    // No readable job id: recorded under the platform tenant with the message's reason.
    import
        .publish_job(&[0xff, 0xff, 0xff, 0x01], Some("application/x-protobuf"))
        .await;
    let events = wait_for(&import, EventKind::ImportDeadLettered, 1).await;
    let garbage = &events[0];
    assert_eq!(garbage.tenant, PLATFORM_TENANT);
    assert!(
        garbage.reason.contains("not a protobuf ImportJob"),
        "{}",
        garbage.reason
    );
    let subject = garbage.subject.clone().unwrap();
    assert_eq!(subject.kind(), subject::Kind::Job);
    assert_eq!(subject.id, "unidentified");
    assert_eq!(garbage.source, "import-svc");
    let payload: serde_json::Value = serde_json::from_str(&garbage.payload_json).unwrap();
    assert_eq!(payload["content_type"], "application/x-protobuf");

    // A job id but an unknown resource: the job is stored as dead-lettered and the event
    // names it, its connection and who asked.
    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000bb";
    let body = format!(
        r#"{{"job_id":"{job_id}","connection_id":"c-7","resources":["invoices"],"requested_by":"ann@firm.example"}}"#
    );
    import
        .publish_job(body.as_bytes(), Some("application/json"))
        .await;
    let events = wait_for(&import, EventKind::ImportDeadLettered, 2).await;
    let invalid = &events[1];
    assert!(
        invalid
            .reason
            .starts_with("resources[0]: unknown resource \"invoices\""),
        "{}",
        invalid.reason
    );
    assert_eq!(
        invalid.tenant, PLATFORM_TENANT,
        "the connection was never looked up"
    );
    assert_eq!(invalid.subject.clone().unwrap().id, job_id);
    let refs = invalid.refs.clone().unwrap();
    assert_eq!(
        (refs.job_id.as_str(), refs.connection_id.as_str()),
        (job_id, "c-7")
    );
    let actor = invalid.actor.clone().unwrap();
    assert_eq!(
        (actor.kind(), actor.id.as_str()),
        (actor::Kind::Person, "ann@firm.example")
    );
    assert_eq!(
        import.job_status(job_id).await.as_deref(),
        Some("dead_lettered")
    );
    // The two messages gave two events, nothing else was recorded.
    assert_eq!(outbox(&import).await.len(), 2);
    import.stop().await;
}

#[tokio::test]
async fn a_cancelled_job_is_audited_as_failed_with_the_cancel_reason() {
    // auth-svc is unreachable, so the job can never start: it waits, queued, for a retry.
    let import = start("audit-cancel", Setup::default()).await;
    let mut client = ImportServiceClient::new(channel(import.address).await);
    let job = pb::ImportJob {
        connection_id: "c-9".into(),
        resources: vec!["contacts".into(), "matters".into()],
        mode: pb::ImportMode::Full as i32,
        requested_by: "nightly-sync".into(),
        ..Default::default()
    };
    let token = token_of("job_submitter");
    let submitted = client
        .submit_job(with_bearer(pb::SubmitJobRequest { job: Some(job) }, &token))
        .await
        .unwrap()
        .into_inner();
    let job_id = submitted.job_id;
    poll_until(
        "the job is stored",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { import.job_status(&job_id).await },
    )
    .await;

    client
        .cancel_job(with_bearer(
            pb::CancelJobRequest {
                job_id: job_id.clone(),
                reason: "wrong connection".into(),
            },
            &token,
        ))
        .await
        .unwrap();

    let events = wait_for(&import, EventKind::ImportFailed, 1).await;
    let cancelled = &events[0];
    assert_eq!(cancelled.reason, "cancelled: wrong connection");
    assert_eq!(cancelled.subject.clone().unwrap().id, job_id);
    assert_eq!(
        cancelled.tenant, PLATFORM_TENANT,
        "the firm was never learnt"
    );
    // The verified credential that submitted it is the actor; it acted for nightly-sync.
    let actor = cancelled.actor.clone().unwrap();
    assert_eq!(
        (actor.kind(), actor.id.as_str()),
        (actor::Kind::Service, "job_submitter")
    );
    let payload: serde_json::Value = serde_json::from_str(&cancelled.payload_json).unwrap();
    assert_eq!(payload["on_behalf_of"], "nightly-sync");
    let mut scopes: Vec<(String, i32)> = cancelled
        .scopes
        .iter()
        .map(|s| (s.family.clone(), s.access))
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            (
                "contacts".to_owned(),
                proto::common::v1::Access::Read as i32
            ),
            ("matters".to_owned(), proto::common::v1::Access::Read as i32)
        ]
    );
    let payload: serde_json::Value = serde_json::from_str(&cancelled.payload_json).unwrap();
    assert_eq!(payload["cancelled"], true);
    assert_eq!(payload["cancelled_by"], "job_submitter");

    poll_until(
        "the job is cancelled",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            (import.job_status(&job_id).await.as_deref() == Some("cancelled")).then_some(())
        },
    )
    .await;
    // One cancel, one event: a second request changes nothing and records nothing.
    client
        .cancel_job(with_bearer(
            pb::CancelJobRequest {
                job_id: job_id.clone(),
                reason: "again".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    let failed: Vec<_> = outbox(&import)
        .await
        .into_iter()
        .filter(|e| e.kind() == EventKind::ImportFailed)
        .collect();
    assert_eq!(failed.len(), 1);
    import.stop().await;
}
