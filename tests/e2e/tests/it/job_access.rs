//! Who did it, and who may: SubmitJob's verified caller is the audit actor (the job's
//! `requested_by` is whom it acted for), callers limited to tenants see and touch only
//! their firms' jobs and records, a job submitter cancels only its own jobs, and every
//! refusal is PERMISSION_DENIED and audited.

use std::time::Duration;

use harness::{token_of, with_bearer};
use proto::common::v1::{AuditEvent, EventKind, actor};
use proto::imports::v1 as import;
use tonic::Code;

use crate::import_jobs::{assert_completed, contacts_only, sim_with};
use crate::stack::{Stack, StackSetup, full_job};

/// Every audit event in import-svc's outbox (delivered or not).
async fn outbox(stack: &Stack) -> Vec<AuditEvent> {
    let mut db = stack.import_database.connect().await;
    let events: Vec<Vec<u8>> = sqlx::query_scalar("SELECT event FROM audit_outbox")
        .fetch_all(&mut db)
        .await
        .unwrap();
    events
        .iter()
        .map(|bytes| <AuditEvent as prost::Message>::decode(bytes.as_slice()).unwrap())
        .collect()
}

/// The ACCESS_DENIED events of `caller` calling `method` of ImportService.
async fn denials(stack: &Stack, caller: &str, method: &str) -> Vec<AuditEvent> {
    // Denials are written by a background writer: give it a moment.
    harness::poll_until(
        &format!("{caller}'s refusal of {method} to be audited"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let found: Vec<_> = outbox(stack)
                .await
                .into_iter()
                .filter(|e| {
                    e.kind() == EventKind::AccessDenied
                        && e.actor.as_ref().is_some_and(|a| a.id == caller)
                        && e.subject.as_ref().is_some_and(|s| s.id.ends_with(method))
                })
                .collect();
            (!found.is_empty()).then_some(found)
        },
    )
    .await
}

async fn submit_as(
    stack: &Stack,
    caller: &str,
    job: import::ImportJob,
) -> Result<String, tonic::Status> {
    stack
        .import()
        .await
        .submit_job(with_bearer(
            import::SubmitJobRequest { job: Some(job) },
            &token_of(caller),
        ))
        .await
        .map(|answer| answer.into_inner().job_id)
}

async fn get_as(stack: &Stack, caller: &str, job_id: &str) -> Result<import::Job, tonic::Status> {
    stack
        .import()
        .await
        .get_job(with_bearer(
            import::GetJobRequest {
                job_id: job_id.into(),
            },
            &token_of(caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn cancel_as(
    stack: &Stack,
    caller: &str,
    job_id: &str,
) -> Result<import::Job, tonic::Status> {
    stack
        .import()
        .await
        .cancel_job(with_bearer(
            import::CancelJobRequest {
                job_id: job_id.into(),
                reason: "test".into(),
            },
            &token_of(caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn list_as(stack: &Stack, caller: &str) -> Vec<String> {
    stack
        .import()
        .await
        .list_jobs(with_bearer(
            import::ListJobsRequest::default(),
            &token_of(caller),
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.job_id)
        .collect()
}

async fn list_records_as(
    stack: &Stack,
    caller: &str,
    account: &str,
) -> Result<usize, tonic::Status> {
    stack
        .import()
        .await
        .list_records(with_bearer(
            import::ListRecordsRequest {
                clio_account_id: account.into(),
                resource: "contacts".into(),
                ..Default::default()
            },
            &token_of(caller),
        ))
        .await
        .map(|answer| answer.into_inner().records.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_verified_submitter_is_the_actor_and_tenant_limits_hold() {
    let mut sim = sim_with(contacts_only(50));
    // Ten pages of 5 a quarter-second apart: a job runs long enough to be cancelled.
    sim.page_delay = Some(Duration::from_millis(250));
    let stack = Stack::start(
        "job_access",
        StackSetup {
            sim,
            import: Box::new(|config| config.importer.page_size = 5),
            ..StackSetup::default()
        },
    )
    .await;
    // The stack's people belong to firm-1.
    let connection = stack
        .connect(&["contacts:read"], "ann@firm.example", 1)
        .await;

    // The verified credential is the actor; requested_by is whom it acted for.
    let job_id = submit_as(
        &stack,
        "job_submitter",
        full_job(&connection, &["contacts"]),
    )
    .await
    .unwrap();
    let done = stack.finished(&job_id, Duration::from_secs(30)).await;
    assert_completed(&done);
    let started = outbox(&stack)
        .await
        .into_iter()
        .find(|e| {
            e.kind() == EventKind::ImportStarted
                && e.subject.as_ref().is_some_and(|s| s.id == job_id)
        })
        .expect("the job's start was audited");
    let actor = started.actor.clone().unwrap();
    assert_eq!(
        (actor.kind(), actor.id.as_str()),
        (actor::Kind::Service, "job_submitter")
    );
    let payload: serde_json::Value = serde_json::from_str(&started.payload_json).unwrap();
    assert_eq!(payload["on_behalf_of"], "e2e");

    // A caller limited to firm-2 cannot submit for a firm-1 connection; nothing is stored.
    let foreign = full_job(&connection, &["contacts"]);
    let refused = submit_as(&stack, "firm2_submitter", foreign.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("firm-1"), "{refused:?}");
    assert!(stack.try_job(&foreign.job_id).await.is_none());
    denials(&stack, "firm2_submitter", "SubmitJob").await;

    // Nor see firm-1's jobs.
    let refused = get_as(&stack, "firm2_submitter", &job_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    denials(&stack, "firm2_submitter", "GetJob").await;
    assert!(!list_as(&stack, "firm2_submitter").await.contains(&job_id));
    assert!(list_as(&stack, "job_submitter").await.contains(&job_id));
    let watch = stack
        .import()
        .await
        .watch_job(with_bearer(
            import::WatchJobRequest {
                job_id: job_id.clone(),
            },
            &token_of("firm2_submitter"),
        ))
        .await;
    assert_eq!(watch.err().map(|s| s.code()), Some(Code::PermissionDenied));

    // Records: a reader of firm-1's account is served; one limited to firm-2 is refused.
    let account = done.clio_account_id.clone();
    assert_eq!(
        list_records_as(&stack, "data_reader", &account)
            .await
            .unwrap(),
        50
    );
    let refused = list_records_as(&stack, "firm2_reader", &account)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    denials(&stack, "firm2_reader", "ListRecords").await;
    let export = stack
        .import()
        .await
        .export_records(with_bearer(
            import::ExportRecordsRequest {
                clio_account_id: account.clone(),
                resource: "contacts".into(),
                ..Default::default()
            },
            &token_of("firm2_reader"),
        ))
        .await;
    assert_eq!(export.err().map(|s| s.code()), Some(Code::PermissionDenied));

    // A job submitter cancels only its own jobs; an operator cancels any.
    let slow = submit_as(
        &stack,
        "job_submitter",
        full_job(&connection, &["contacts"]),
    )
    .await
    .unwrap();
    let refused = cancel_as(&stack, "other_submitter", &slow)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("only the jobs it submitted"),
        "{refused:?}"
    );
    denials(&stack, "other_submitter", "CancelJob").await;
    cancel_as(&stack, "operator", &slow).await.unwrap();
    let ended = stack.finished(&slow, Duration::from_secs(30)).await;
    assert_eq!(ended.status, import::JobStatus::Cancelled as i32);
    stack.stop().await;
}
