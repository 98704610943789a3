//! Dependency outages, restarts and lost or dead-lettered messages: every job ends, visibly,
//! with exactly Clio's data. Backoffs and limits are shortened in config so each case runs
//! in seconds; the delivery limit is set low so that any path that still spent it on an
//! outage or a restart would dead-letter the job and fail the test.

use std::time::Duration;

use harness::poll_until;
use proto::common::v1::EventKind;
use proto::imports::v1 as import;

use crate::import_jobs::{
    assert_completed, contacts_only, outbox_events, sim_with, wait_for_pages,
};
use crate::stack::{Stack, StackSetup, full_job};
use crate::sync_integrity::assert_stored_as_in_clio;

const PERSON: &str = "alice@firm.example";

/// Quick retry tiers, a delivery limit a single hand-back would exhaust, and a quick
/// reconciler.
fn fault_config(config: &mut import_svc::Config) {
    config.amqp.delivery_limit = 1;
    config.amqp.retry_delays_ms = vec![100, 300, 600];
    config.importer.page_size = 50;
    config.importer.max_outage_secs = 120;
    config.importer.reconcile_interval_ms = 200;
    config.importer.reconcile_after_secs = 1;
}

/// A stack with `contacts` contacts served `page_delay_ms` apart, the fault config plus
/// `extra`, and a connection that may read contacts.
async fn outage_stack(
    test: &str,
    contacts: u64,
    page_delay_ms: Option<u64>,
    setup: impl FnOnce(&mut StackSetup),
) -> (Stack, String) {
    let mut sim = sim_with(contacts_only(contacts));
    sim.page_delay = page_delay_ms.map(Duration::from_millis);
    let mut stack_setup = StackSetup {
        sim,
        import: Box::new(fault_config),
        ..StackSetup::default()
    };
    setup(&mut stack_setup);
    let stack = Stack::start(test, stack_setup).await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    (stack, connection)
}

/// The job's stored retry count (dependency outages waited out).
async fn retries(stack: &Stack, job_id: &str) -> Option<i32> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_scalar("SELECT retries FROM jobs WHERE job_id = $1::uuid")
        .bind(job_id)
        .fetch_optional(&mut db)
        .await
        .ok()
        .flatten()
}

async fn wait_for_retries(stack: &Stack, job_id: &str, at_least: i32) {
    poll_until(
        &format!("job {job_id} to wait out {at_least} retries"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { (retries(stack, job_id).await? >= at_least).then_some(()) },
    )
    .await;
}

/// The job ended completed with exactly the simulator's contacts (ids and etags), and its
/// audit trail has a start and exactly one completion.
async fn assert_exact(stack: &Stack, job_id: &str, contacts: i64) {
    let done = stack.finished(job_id, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert_eq!(stack.stored("contacts").await, (contacts, contacts));
    assert_stored_as_in_clio(stack).await;
    assert_eq!(
        done.progress[0].records_fetched,
        u64::try_from(contacts).unwrap()
    );
    poll_until(
        "the job's audit events",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let started = outbox_events(stack, job_id, EventKind::ImportStarted).await;
            let completed = outbox_events(stack, job_id, EventKind::ImportCompleted).await;
            (started >= 1 && completed == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        outbox_events(stack, job_id, EventKind::ImportDeadLettered).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_submitted_while_auth_svc_is_down_completes_after_it() {
    let (stack, connection) = outage_stack("auth_down", 500, None, |s| s.auth_proxy = true).await;
    let proxy = stack.auth_proxy.as_ref().unwrap();
    proxy.cut();
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    // Many more retries than the delivery limit (1) allows hand-backs.
    wait_for_retries(&stack, &job_id, 5).await;
    let waiting = stack.job(&job_id).await;
    assert_eq!(waiting.status, import::JobStatus::Queued as i32);
    proxy.restore();

    assert_exact(&stack, &job_id, 500).await;
    let done = stack.job(&job_id).await;
    assert_eq!(
        done.attempts as i32 - 1,
        retries(&stack, &job_id).await.unwrap(),
        "each retry was one attempt, and the last one ran"
    );
    // Only the run that reached Clio recorded a start.
    assert_eq!(
        outbox_events(&stack, &job_id, EventKind::ImportStarted).await,
        1
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_svc_down_when_a_running_job_must_renew_its_lease_delays_it_only() {
    let (stack, connection) = outage_stack("auth_down_mid_job", 2_000, Some(30), |s| {
        s.auth_proxy = true
    })
    .await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    wait_for_pages(&stack, &job.job_id, 3).await;

    let proxy = stack.auth_proxy.as_ref().unwrap();
    proxy.cut();
    // import-svc's clock moves past the lease's end: the next page needs a new lease.
    stack.import_clock.advance(chrono::Duration::minutes(10));
    wait_for_retries(&stack, &job.job_id, 4).await;
    proxy.restore();

    assert_exact(&stack, &job.job_id, 2_000).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clio_outage_longer_than_a_pages_retries_delays_the_job_only() {
    let (stack, connection) = outage_stack("clio_down", 1_000, Some(20), |s| {
        s.import = Box::new(|config| {
            fault_config(config);
            config.importer.max_page_attempts = 2;
        });
    })
    .await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    wait_for_pages(&stack, &job.job_id, 3).await;
    stack
        .fault(clio_sim::Fault::Status {
            status: 503,
            count: None,
            fraction: None,
            path_prefix: None,
        })
        .await;
    wait_for_retries(&stack, &job.job_id, 3).await;
    stack
        .sim
        .admin()
        .clear_faults(clio_sim::Region::Us)
        .await
        .unwrap();
    assert_exact(&stack, &job.job_id, 1_000).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cut_mid_job_delays_the_job_and_loses_nothing() {
    let (stack, connection) =
        outage_stack("db_cut", 2_000, Some(30), |s| s.import_db_proxy = true).await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    wait_for_pages(&stack, &job.job_id, 3).await;

    let proxy = stack.import_db_proxy.as_ref().unwrap();
    proxy.cut();
    // The outage itself: with 100-600 ms retry tiers, many retries happen in it, and any
    // hand-back (delivery limit 1) would have dead-lettered the job.
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();

    assert_exact(&stack, &job.job_id, 2_000).await;
    let done = stack.job(&job.job_id).await;
    assert!(done.attempts >= 2, "the job ran again after the outage");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restarts_mid_job_never_spend_the_delivery_limit() {
    let (mut stack, connection) = outage_stack("restarts", 3_000, Some(30), |_| {}).await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    for restart in 1..=3u64 {
        wait_for_pages(&stack, &job.job_id, restart * 4).await;
        stack.stop_import().await;
        stack.start_import().await;
    }
    assert_exact(&stack, &job.job_id, 3_000).await;
    assert_eq!(stack.job(&job.job_id).await.attempts, 4);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_the_broker_dead_letters_ends_its_job_with_the_reason() {
    let (mut stack, connection) = outage_stack("broker_dead_letter", 100, None, |_| {}).await;
    stack.stop_import().await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    // A consumer that crashes on the message, twice: over the delivery limit (1), the
    // broker dead-letters it.
    let jobs_queue = stack.topology.jobs_queue.clone();
    let mut bounced = 0;
    while stack.broker.bounce(&jobs_queue).await {
        bounced += 1;
        assert!(bounced <= 5, "the broker never dead-lettered the message");
    }
    assert_eq!(bounced, 2);
    stack.start_import().await;

    let dead = stack.finished(&job.job_id, Duration::from_secs(20)).await;
    assert_eq!(dead.status, import::JobStatus::DeadLettered as i32);
    assert!(
        dead.failure_reason.contains("delivery_limit"),
        "{}",
        dead.failure_reason
    );
    poll_until(
        "the dead letter's audit event",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            (outbox_events(&stack, &job.job_id, EventKind::ImportDeadLettered).await == 1)
                .then_some(())
        },
    )
    .await;
    // Operators still find the message in the dead-letter queue.
    let parked = stack
        .broker
        .next_message(&stack.topology.dead_letter_queue, Duration::from_secs(10))
        .await;
    assert_eq!(
        <import::ImportJob as prost::Message>::decode(parked.body.as_slice())
            .unwrap()
            .job_id,
        job.job_id
    );
    // WatchJob ends: the job is final.
    let updates = stack.watch_to_the_end(&job.job_id).await;
    assert_eq!(
        updates
            .last()
            .and_then(|u| u.job.as_ref())
            .map(|j| j.status),
        Some(import::JobStatus::DeadLettered as i32)
    );
    stack.stop().await;
}

/// A job stored as queued whose message exists nowhere (purged by an operator, lost by a
/// broker), its staleness clock already run out.
async fn lost_job(stack: &Stack, connection: &str) -> String {
    let job_id = uuid::Uuid::new_v4();
    let mut db = stack.import_database.connect().await;
    sqlx::query(
        "INSERT INTO jobs (job_id, connection_id, resources, mode, requested_by, status, changed_at)
         VALUES ($1, $2, '{contacts}', 'full', 'e2e', 'queued', now() - interval '1 hour')",
    )
    .bind(job_id)
    .bind(connection)
    .execute(&mut db)
    .await
    .unwrap();
    job_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_message_was_lost_is_published_again_and_completes() {
    let (stack, connection) = outage_stack("lost_message", 300, None, |_| {}).await;
    let job_id = lost_job(&stack, &connection).await;
    assert_exact(&stack, &job_id, 300).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_lost_again_and_again_is_dead_lettered_by_the_reconciler() {
    let (stack, connection) = outage_stack("lost_for_good", 10, None, |s| {
        s.import = Box::new(|config| {
            fault_config(config);
            config.importer.reconcile_max_republish = 0;
        });
    })
    .await;
    let job_id = lost_job(&stack, &connection).await;
    let dead = stack.finished(&job_id, Duration::from_secs(20)).await;
    assert_eq!(dead.status, import::JobStatus::DeadLettered as i32);
    assert!(
        dead.failure_reason.starts_with("lost:"),
        "{}",
        dead.failure_reason
    );
    assert_eq!(
        outbox_events(&stack, &job_id, EventKind::ImportDeadLettered).await,
        1
    );
    stack.stop().await;
}

/// Import events about `job_id` that audit-svc holds for firm-1.
async fn delivered_import_events(stack: &Stack, job_id: &str) -> Vec<EventKind> {
    stack
        .audit_events(
            "firm-1",
            &[EventKind::ImportStarted, EventKind::ImportCompleted],
        )
        .await
        .iter()
        .filter(|e| e.refs.as_ref().is_some_and(|r| r.job_id == job_id))
        .map(|e| e.kind())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_svc_down_never_holds_a_job_and_its_events_arrive_after() {
    let (stack, connection) = outage_stack("audit_down", 400, None, |s| s.audit_proxy = true).await;
    let proxy = stack.audit_proxy.as_ref().unwrap();
    proxy.cut();
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    assert_exact(&stack, &job_id, 400).await;
    assert!(delivered_import_events(&stack, &job_id).await.is_empty());

    proxy.restore();
    let delivered = poll_until(
        "the job's events to reach audit-svc",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let kinds = delivered_import_events(&stack, &job_id).await;
            (kinds.len() == 2).then_some(kinds)
        },
    )
    .await;
    assert!(delivered.contains(&EventKind::ImportStarted));
    assert!(delivered.contains(&EventKind::ImportCompleted));
    stack.stop().await;
}
