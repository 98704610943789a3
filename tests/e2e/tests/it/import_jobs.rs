//! Import jobs end to end: RabbitMQ → import-svc → auth-svc lease → Clio simulator →
//! Postgres, checked against the simulator's own data and call counters.

use std::collections::BTreeMap;
use std::time::Duration;

use clio_sim::{DatasetSize, Fault, Region, Resource, SimConfig};
use harness::{ServingStatus, TcpProxy, poll_until, token_of, wait_for_health, with_bearer};
use proto::common::v1::{AuditEvent, EventKind};
use proto::imports::v1 as import;
use proto::queue::header;

use crate::stack::{Stack, StackSetup, full_job};

const PERSON: &str = "alice@firm.example";

pub(crate) fn sim_with(dataset: DatasetSize) -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        dataset,
        rate_limit: None,
        ..SimConfig::default()
    }
}

pub(crate) fn contacts_only(count: u64) -> DatasetSize {
    DatasetSize {
        contacts: count,
        ..DatasetSize::default()
    }
}

/// A stack whose simulator has `contacts` contacts and answers each list page after
/// `page_delay` (so a test can act mid-job), and a connection that may read contacts.
async fn contacts_stack(test: &str, contacts: u64, page_delay: Option<u64>) -> (Stack, String) {
    let mut sim = sim_with(contacts_only(contacts));
    sim.page_delay = page_delay.map(Duration::from_millis);
    let stack = Stack::start(
        test,
        StackSetup {
            sim,
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    (stack, connection)
}

/// Submits `job` and waits until it completed.
async fn run_to_completion(stack: &Stack, job: import::ImportJob) -> import::Job {
    let job_id = stack.submit(job).await;
    let done = stack.finished(&job_id, Duration::from_secs(60)).await;
    assert_completed(&done);
    done
}

pub(crate) fn assert_completed(job: &import::Job) {
    assert_eq!(
        job.status,
        import::JobStatus::Completed as i32,
        "job ended {:?}: {}",
        import::JobStatus::try_from(job.status),
        job.failure_reason
    );
}

/// Requests the simulator answered for `endpoint` (all tokens).
pub(crate) async fn api_calls(stack: &Stack, endpoint: &str) -> u64 {
    let calls = stack.sim.admin().calls().await.unwrap();
    calls
        .api
        .iter()
        .filter(|c| c.endpoint.contains(endpoint))
        .map(|c| c.count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_import_lands_exactly_and_the_same_job_id_runs_once() {
    // The duplicate's handling leaves no trace in the database by design, so its ack is
    // observed in the logs; capture must start before any service logs.
    let logs = harness::capture_logs();
    // Slow pages keep the first run going long enough for the duplicate to queue up
    // behind the job's lock: the race between that lock and the final status is the one
    // this test exercises.
    let (stack, connection) = contacts_stack("full_import", 10_000, Some(20)).await;

    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    wait_for_pages(&stack, &job.job_id, 2).await;
    stack.publish(&job).await;
    let done = stack.finished(&job.job_id, Duration::from_secs(60)).await;
    assert_completed(&done);

    let in_clio = stack
        .sim
        .admin()
        .count(Region::Us, Resource::Contacts)
        .await
        .unwrap();
    assert_eq!(in_clio, 10_000);
    assert_eq!(stack.stored("contacts").await, (10_000, 10_000));
    assert_eq!(done.progress[0].records_written, 10_000);

    // Wait until the duplicate was acknowledged (a prefetched, unacked message is
    // invisible to basic_get, so an empty queue would prove nothing).
    poll_until(
        "the duplicate delivery to be acknowledged",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            logs.text()
                .lines()
                .any(|line| {
                    line.contains("acknowledged the duplicate delivery")
                        && line.contains(&job.job_id)
                })
                .then_some(())
        },
    )
    .await;
    // It did not run again: one attempt, one start event, each of the 50 pages read once.
    let after = stack.job(&job.job_id).await;
    assert_eq!(
        after.attempts, 1,
        "the duplicate delivery ran the job again"
    );
    assert_completed(&after);
    assert_eq!(
        outbox_events(&stack, &job.job_id, EventKind::ImportStarted).await,
        1
    );
    assert_eq!(api_calls(&stack, "contacts").await, 50);
    stack.stop().await;
}

/// Audit events of `kind` about job `job_id` in import-svc's outbox (delivered or not).
pub(crate) async fn outbox_events(stack: &Stack, job_id: &str, kind: EventKind) -> usize {
    let mut db = stack.import_database.connect().await;
    let events: Vec<Vec<u8>> = sqlx::query_scalar("SELECT event FROM audit_outbox")
        .fetch_all(&mut db)
        .await
        .unwrap();
    events
        .iter()
        .map(|bytes| <AuditEvent as prost::Message>::decode(bytes.as_slice()).unwrap())
        .filter(|event| {
            event.kind() == kind && event.subject.as_ref().is_some_and(|s| s.id == job_id)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incremental_import_picks_up_only_changes_and_deletions() {
    let (stack, connection) = contacts_stack("incremental", 600, None).await;
    let full = stack.submit(full_job(&connection, &["contacts"])).await;
    let job = stack.finished(&full, Duration::from_secs(30)).await;
    assert_eq!(job.status, import::JobStatus::Completed as i32);
    assert_eq!(stack.stored("contacts").await, (600, 600));

    // Ids as Clio gave them, picked at the start, middle and end of the id order.
    let mut db = stack.import_database.connect().await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT clio_id FROM contacts ORDER BY clio_id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let [changed, deleted] = [[ids[2], ids[299], ids[599]], [ids[9], ids[399], 0]];
    let admin = stack.sim.admin();
    admin
        .advance_clock(Duration::from_secs(3_600))
        .await
        .unwrap();
    for id in changed.map(|id| id.to_string()) {
        admin
            .update_record(
                Region::Us,
                Resource::Contacts,
                &id,
                serde_json::json!({ "name": format!("Renamed {id}") }),
            )
            .await
            .unwrap();
    }
    for id in &deleted[..2] {
        stack.delete_contact(*id).await;
    }
    let created = stack.create_contact("New Client LLP").await;
    let calls_before = api_calls(&stack, "contacts").await;

    let incremental = stack
        .submit(import::ImportJob {
            mode: import::ImportMode::Incremental as i32,
            ..full_job(&connection, &["contacts"])
        })
        .await;
    let job = stack.finished(&incremental, Duration::from_secs(30)).await;
    assert_completed(&job);
    let progress = &job.progress[0];
    assert_eq!(progress.records_written, 4, "3 changed and 1 created");
    assert_eq!(progress.records_deleted, 2);
    assert_eq!(stack.stored("contacts").await, (599, 601));

    let renamed: String =
        sqlx::query_scalar("SELECT data->>'name' FROM contacts WHERE clio_id = $1")
            .bind(changed[1])
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(renamed, format!("Renamed {}", changed[1]));
    let marked: Vec<i64> = sqlx::query_scalar(
        "SELECT clio_id FROM contacts WHERE deleted_at IS NOT NULL ORDER BY clio_id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(marked, deleted[..2].to_vec());
    let new_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts WHERE clio_id = $1::bigint AND deleted_at IS NULL",
    )
    .bind(created.to_string())
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(new_rows, 1);
    // Changes came in one updated_since page; deletions from an id-only sweep (3 pages of
    // 200 ids), never a second full read of every record.
    let incremental_calls = api_calls(&stack, "contacts").await - calls_before;
    assert!(
        incremental_calls <= 5,
        "the incremental job made {incremental_calls} contacts calls"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_for_unknown_connections_or_missing_scopes_are_dead_lettered_before_clio() {
    let stack = Stack::start("missing_scope", StackSetup::default()).await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;

    let job = full_job(&connection, &["contacts", "matters"]);
    stack.publish(&job).await;
    let dead = stack
        .broker
        .next_message(&stack.topology.dead_letter_queue, Duration::from_secs(20))
        .await;
    let reason = dead.header(header::REJECTION_REASON).unwrap();
    assert!(reason.contains("matters:read"), "{reason}");
    let stored = stack.finished(&job.job_id, Duration::from_secs(10)).await;
    assert_eq!(stored.status, import::JobStatus::DeadLettered as i32);
    assert!(stored.failure_reason.contains("matters:read"));
    assert_eq!(api_calls(&stack, "contacts").await, 0);
    assert_eq!(api_calls(&stack, "matters").await, 0);

    // A connection auth-svc has never heard of is refused the same way.
    let stranger = full_job(&uuid::Uuid::new_v4().to_string(), &["contacts"]);
    stack.publish(&stranger).await;
    let dead = stack
        .broker
        .next_message(&stack.topology.dead_letter_queue, Duration::from_secs(20))
        .await;
    let reason = dead.header(header::REJECTION_REASON).unwrap();
    assert!(
        reason.starts_with("connection_id: unknown connection"),
        "{reason}"
    );
    let stored = stack
        .finished(&stranger.job_id, Duration::from_secs(10))
        .await;
    assert_eq!(stored.status, import::JobStatus::DeadLettered as i32);
    assert_eq!(api_calls(&stack, "contacts").await, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_storms_and_server_errors_are_ridden_out() {
    let (stack, connection) = contacts_stack("clio_faults", 2_000, None).await;
    stack.fault(Fault::RateLimitStorm { count: 3 }).await;
    stack.fault(contacts_status(503, 4)).await;

    run_to_completion(&stack, full_job(&connection, &["contacts"])).await;
    assert_eq!(stack.stored("contacts").await, (2_000, 2_000));
    stack.stop().await;
}

/// 429s the simulator answered, per token id, over every endpoint.
async fn status_429_by_token(stack: &Stack) -> BTreeMap<String, u64> {
    let calls = stack.sim.admin().calls().await.unwrap();
    let mut by_token = BTreeMap::new();
    for api in calls.api.iter().filter(|api| api.status_429 > 0) {
        *by_token.entry(api.token_id.clone()).or_default() += api.status_429;
    }
    by_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_is_waited_out_as_long_as_retry_after_says_with_one_429() {
    let (stack, connection) = contacts_stack("retry_after", 1_000, None).await;
    // 2.5 s of 429s: the first says `Retry-After: 3`. Waiting as told lands after the
    // storm; a client that ignored it (retrying at once, or after its default 1 s) would
    // be answered 429 again and again.
    stack.fault(Fault::RateLimitStormFor { ms: 2_500 }).await;

    let done = run_to_completion(&stack, full_job(&connection, &["contacts"])).await;
    assert_eq!(stack.stored("contacts").await, (1_000, 1_000));
    assert_eq!(done.progress[0].records_written, 1_000);
    let storms = status_429_by_token(&stack).await;
    assert_eq!(
        storms.values().collect::<Vec<_>>(),
        [&1],
        "exactly one 429, for the importer's token: {storms:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clio_calls_that_time_out_are_retried_with_backoff() {
    // Timed-out calls never finish at the simulator, so its counters cannot see them; the
    // importer's retry warnings can.
    let logs = harness::capture_logs();
    let stack = Stack::start(
        "clio_timeouts",
        StackSetup {
            sim: sim_with(contacts_only(1_000)),
            import: Box::new(|config| config.importer.request_timeout_ms = 300),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    // The next two answers come long after the importer has given up on them; contacts
    // are the only endpoint it calls.
    stack
        .fault(Fault::Latency {
            ms: 5_000,
            count: Some(2),
        })
        .await;

    let done = run_to_completion(&stack, full_job(&connection, &["contacts"])).await;
    assert_eq!(stack.stored("contacts").await, (1_000, 1_000));
    assert_eq!(done.progress[0].records_written, 1_000);
    let timeouts: Vec<String> = logs
        .text()
        .lines()
        .filter(|line| line.contains("clio request failed; retrying") && line.contains("timed out"))
        .map(str::to_owned)
        .collect();
    assert_eq!(timeouts.len(), 2, "{timeouts:#?}");
    // Backoff, not an immediate retry: attempts 1 and 2 each announce their delay.
    for (attempt, line) in timeouts.iter().enumerate() {
        assert!(
            line.contains(&format!("\"attempts\":{}", attempt + 1)),
            "{line}"
        );
        assert!(line.contains("\"delay_ms\":"), "{line}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_revoked_mid_job_fails_the_job_with_the_reason() {
    let (stack, connection) = contacts_stack("revoked_mid_job", 4_000, Some(30)).await;
    stack.fault(Fault::RevokeAfter { calls: 5 }).await;

    let job = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done.status, import::JobStatus::Failed as i32);
    assert!(
        done.failure_reason.contains("reconnect") || done.failure_reason.contains("revoked"),
        "{}",
        done.failure_reason
    );
    let (live, _) = stack.stored("contacts").await;
    assert!(
        live > 0 && live < 4_000,
        "{live} rows before the revocation"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_that_expires_twice_mid_job_is_refreshed_each_time() {
    // Tokens live an hour of simulated time; moving the simulator's clock on two hours
    // expires the one in use (Clio answers 401) without touching the grant.
    let mut sim = sim_with(contacts_only(4_000));
    sim.page_delay = Some(Duration::from_millis(30));
    sim.access_token_ttl = Duration::from_secs(3_600);
    let stack = Stack::start(
        "token_expiry",
        StackSetup {
            sim,
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    let job = stack.submit(full_job(&connection, &["contacts"])).await;

    // Two separate expiries, each followed by pages fetched with the refreshed token.
    let mut pages = 3;
    for _ in 0..2 {
        wait_for_pages(&stack, &job, pages).await;
        stack
            .sim
            .admin()
            .advance_clock(Duration::from_secs(2 * 3_600))
            .await
            .unwrap();
        pages = committed_pages(&stack, &job).await + 3;
    }
    let done = stack.finished(&job, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert!(
        pages <= 20,
        "the test expired the token after the job's last page"
    );
    assert_eq!(stack.stored("contacts").await, (4_000, 4_000));
    assert_eq!(done.progress[0].records_written, 4_000);
    let refreshes = stack.sim.admin().calls().await.unwrap().token.refresh_token;
    assert_eq!(refreshes, 2, "one refresh per expiry");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_401_that_persists_after_a_refresh_fails_the_job_naming_it() {
    let (stack, connection) = contacts_stack("persistent_401", 1_000, None).await;
    // The first call and the one retried with the refreshed token are both refused.
    stack.fault(contacts_status(401, 2)).await;

    let job = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job, Duration::from_secs(30)).await;
    assert_eq!(
        done.status,
        import::JobStatus::Failed as i32,
        "{}",
        done.failure_reason
    );
    assert!(
        done.failure_reason
            .contains("Clio rejected the token again after a refresh (401)"),
        "{}",
        done.failure_reason
    );
    let calls = stack.sim.admin().calls().await.unwrap();
    assert_eq!(
        calls.token.refresh_token, 1,
        "exactly one refresh was tried"
    );
    assert_eq!(api_calls(&stack, "contacts").await, 2);
    assert_eq!(stack.stored("contacts").await, (0, 0));
    stack.stop().await;
}

/// Pages the job has committed so far, over all its resources.
async fn committed_pages(stack: &Stack, job_id: &str) -> u64 {
    stack
        .job(job_id)
        .await
        .progress
        .iter()
        .map(|p| p.pages)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_running_job_at_the_next_page() {
    let (stack, connection) = contacts_stack("cancel", 6_000, Some(100)).await;
    let job = stack.submit(full_job(&connection, &["contacts"])).await;
    wait_for_pages(&stack, &job, 2).await;

    stack
        .import()
        .await
        .cancel_job(with_bearer(
            import::CancelJobRequest {
                job_id: job.clone(),
                reason: "wrong connection".into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap();
    let done = stack.finished(&job, Duration::from_secs(10)).await;
    assert_eq!(done.status, import::JobStatus::Cancelled as i32);
    let pages = api_calls(&stack, "contacts").await;
    assert!(pages < 30, "{pages} of 30 pages were fetched");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_job_loses_and_duplicates_nothing() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let proxied = harness::amqp_url().replace("127.0.0.1:5672", &proxy.address.to_string());
    let mut sim = sim_with(contacts_only(4_000));
    sim.page_delay = Some(Duration::from_millis(50));
    let stack = Stack::start(
        "broker_restart",
        StackSetup {
            sim,
            import: Box::new(move |config| {
                config.amqp.url = secrecy::SecretString::from(proxied);
            }),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    wait_for_pages(&stack, &job.job_id, 3).await;

    proxy.cut();
    // import-svc notices the broker is gone, and finds it again once it is back.
    wait_for_health(stack.import_address(), "", ServingStatus::NotServing).await;
    proxy.restore();
    wait_for_health(stack.import_address(), "", ServingStatus::Serving).await;

    let done = stack.finished(&job.job_id, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert_eq!(stack.stored("contacts").await, (4_000, 4_000));
    // Nothing was fetched again from the start: one call per page (20), at most one more
    // for a page in flight when the connection went.
    let calls = api_calls(&stack, "contacts").await;
    assert!((20..=21).contains(&calls), "{calls} calls to contacts");
    // And the consumer is taking new jobs again.
    let next = full_job(&connection, &["contacts"]);
    stack.publish(&next).await;
    assert_completed(&stack.finished(&next.job_id, Duration::from_secs(60)).await);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_mid_job_resumes_where_it_stopped() {
    let (mut stack, connection) = contacts_stack("killed_consumer", 6_000, Some(50)).await;
    stack.stop_import().await;

    let mut child = crate::process::ImportProcess::spawn(&stack.import_config);
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    let db = sqlx::PgPool::connect(&stack.import_database.url)
        .await
        .unwrap();
    poll_until(
        "some pages to be committed",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let pages: Option<i64> = sqlx::query_scalar(
                "SELECT sum(pages)::bigint FROM job_resources WHERE job_id = $1::uuid",
            )
            .bind(&job.job_id)
            .fetch_one(&db)
            .await
            .ok()
            .flatten();
            (pages.unwrap_or(0) >= 5).then_some(())
        },
    )
    .await;
    child.kill();

    stack.start_import().await;
    let done = stack.finished(&job.job_id, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert_eq!(stack.stored("contacts").await, (6_000, 6_000));
    // Resumed from the checkpoint: at most the page in flight at the kill is read twice.
    let pages = api_calls(&stack, "contacts").await;
    assert!(
        (30..=32).contains(&pages),
        "{pages} page calls for 30 pages"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_import_never_exceeds_the_limit_or_sees_a_429() {
    const LIMIT: u32 = 10;
    let stack = Stack::start(
        "rate_limited",
        StackSetup {
            sim: SimConfig {
                rate_limit: Some(clio_sim::RateLimit {
                    limit: LIMIT,
                    window: Duration::from_secs(1),
                }),
                ..sim_with(contacts_only(8_000))
            },
            import: Box::new(|config| config.importer.rate_limit_reserve = 0),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    let job = stack.submit(full_job(&connection, &["contacts"])).await;
    let updates = stack.watch_to_the_end(&job).await;
    let done = stack.finished(&job, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert_eq!(stack.stored("contacts").await, (8_000, 8_000));

    // The watcher is told when the import waits for the rate limit, and how long the
    // rest should take.
    let of_kind = |kind: import::job_progress::Kind| {
        updates
            .iter()
            .filter(move |u| u.kind == kind as i32)
            .collect::<Vec<_>>()
    };
    let waits = of_kind(import::job_progress::Kind::RateLimitWait);
    assert!(
        !waits.is_empty() && waits.iter().all(|w| w.wait_ms > 0),
        "{updates:?}"
    );
    let pages = of_kind(import::job_progress::Kind::Page);
    assert!(
        pages
            .iter()
            .all(|p| p.records_per_second > 0.0 && p.resource == "contacts"),
        "{pages:?}"
    );

    let calls = stack.sim.admin().calls().await.unwrap();
    let contacts: Vec<_> = calls
        .api
        .iter()
        .filter(|c| c.endpoint.contains("contacts"))
        .collect();
    assert!(contacts.iter().all(|c| c.status_429 == 0), "{contacts:?}");
    let busiest = calls.max_in_window.values().copied().max().unwrap_or(0);
    assert!(
        busiest <= u64::from(LIMIT),
        "{busiest} requests in one window"
    );

    // Paced, not bursty: the import needed the 4 windows 40 requests take at this limit
    // (how close it gets to the limit's throughput is measured by the benchmark
    // `cargo bench -p e2e --bench import_rate`, where timing is not a test's business).
    assert!(contacts.iter().map(|c| c.count).sum::<u64>() == 40);
    stack.stop().await;
}

/// Waits until the job has committed `pages` pages.
pub(crate) async fn wait_for_pages(stack: &Stack, job_id: &str, pages: u64) {
    poll_until(
        &format!("{pages} pages of job {job_id}"),
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let job = stack.try_job(job_id).await?;
            (job.progress.iter().map(|p| p.pages).sum::<u64>() >= pages).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_checkpoints_and_hands_the_job_back() {
    let (mut stack, connection) = contacts_stack("graceful_stop", 6_000, Some(50)).await;
    let job = full_job(&connection, &["contacts"]);
    stack.publish(&job).await;
    wait_for_pages(&stack, &job.job_id, 3).await;

    // SIGTERM-like stop: intake stops, the running job checkpoints at its next page and
    // its message goes back to the queue.
    stack.stop_import().await;
    let mut db = stack.import_database.connect().await;
    let (status, pages): (String, i64) = sqlx::query_as(
        "SELECT j.status, sum(r.pages)::bigint FROM jobs j JOIN job_resources r USING (job_id)
         WHERE j.job_id = $1::uuid GROUP BY j.status",
    )
    .bind(&job.job_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(status, "queued");
    assert!((3..30).contains(&pages), "{pages} pages checkpointed");

    stack.start_import().await;
    let done = stack.finished(&job.job_id, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert_eq!(stack.stored("contacts").await, (6_000, 6_000));
    assert_eq!(done.attempts, 2, "the second delivery resumed the job");
    let page_calls = api_calls(&stack, "contacts").await;
    assert!(
        (30..=31).contains(&page_calls),
        "{page_calls} page calls for 30 pages"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_json_job_from_the_queue_runs_to_completion() {
    let (stack, connection) = contacts_stack("json_job", 400, None).await;
    let job_id = uuid::Uuid::new_v4().to_string();
    stack
        .publish_json(&serde_json::json!({
            "job_id": job_id,
            "connection_id": connection,
            "resources": ["contacts"],
            "mode": "IMPORT_MODE_FULL",
            "requested_by": "json-producer",
        }))
        .await;
    let done = stack.finished(&job_id, Duration::from_secs(30)).await;
    assert_completed(&done);
    assert_eq!(done.requested_by, "json-producer");
    assert_eq!(done.progress[0].records_written, 400);
    assert_eq!(stack.stored("contacts").await, (400, 400));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sync_marks_records_deleted_in_clio_as_deleted() {
    let (stack, connection) = contacts_stack("full_deletions", 600, None).await;
    run_to_completion(&stack, full_job(&connection, &["contacts"])).await;

    let ids = stored_ids(&stack).await;
    let deleted = [ids[0], ids[300], ids[599]];
    for id in deleted {
        stack.delete_contact(id).await;
    }

    let done = run_to_completion(&stack, full_job(&connection, &["contacts"])).await;
    assert_eq!(done.progress[0].records_deleted, 3);
    let in_clio = stack
        .sim
        .admin()
        .count(Region::Us, Resource::Contacts)
        .await
        .unwrap();
    assert_eq!(in_clio, 597);
    assert_eq!(stack.stored("contacts").await, (597, 600));
    assert_eq!(marked_deleted(&stack).await, deleted.to_vec());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extra_fields_are_stored_and_a_filtered_job_touches_only_what_it_matched() {
    let (stack, connection) = contacts_stack("job_options", 600, None).await;
    run_to_completion(&stack, full_job(&connection, &["contacts"])).await;
    // `title` and `company` are not among the default fields.
    assert_eq!(rows_with_keys(&stack, &["title", "company"]).await, 0);

    let with_fields = stack
        .submit(import::ImportJob {
            fields: vec![import::ResourceFields {
                resource: "contacts".into(),
                fields: vec!["title".into(), "company{id,name}".into()],
            }],
            ..full_job(&connection, &["contacts"])
        })
        .await;
    assert_completed(&stack.finished(&with_fields, Duration::from_secs(30)).await);
    assert_eq!(rows_with_keys(&stack, &["title", "company"]).await, 600);

    // A contact only the filter matches, edited later than anything stored so far, and a
    // deletion the filtered listing cannot see.
    let admin = stack.sim.admin();
    admin
        .advance_clock(Duration::from_secs(3_600))
        .await
        .unwrap();
    let matched = stack.create_contact("Zebra Filtertest LLP").await;
    let unseen = stored_ids(&stack).await[7];
    stack.delete_contact(unseen).await;
    let mark_before = high_water(&stack, &connection).await;

    let filtered = stack
        .submit(import::ImportJob {
            filters: [("query".to_owned(), "zebra filtertest".to_owned())].into(),
            ..full_job(&connection, &["contacts"])
        })
        .await;
    let done = stack.finished(&filtered, Duration::from_secs(30)).await;
    assert_completed(&done);
    assert_eq!(done.progress[0].records_fetched, 1);
    assert_eq!(done.progress[0].records_written, 1);
    assert_eq!(done.progress[0].records_deleted, 0);
    // Stored: the match; nothing marked deleted (the filtered listing saw only one record).
    assert_eq!(stack.stored("contacts").await, (601, 601));
    assert!(marked_deleted(&stack).await.is_empty());
    let mut db = stack.import_database.connect().await;
    let name: String =
        sqlx::query_scalar("SELECT data->>'name' FROM contacts WHERE clio_id = $1::bigint")
            .bind(matched.to_string())
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(name, "Zebra Filtertest LLP");
    // The high-water mark still says what the last unfiltered job saw: an incremental job
    // must not skip the changes the filter left out.
    assert_eq!(high_water(&stack, &connection).await, mark_before);
    stack.stop().await;
}

/// Clio ids of the stored contacts, in id order.
async fn stored_ids(stack: &Stack) -> Vec<i64> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_scalar("SELECT clio_id FROM contacts ORDER BY clio_id")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// Clio ids of the contacts marked deleted, in id order.
async fn marked_deleted(stack: &Stack) -> Vec<i64> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_scalar("SELECT clio_id FROM contacts WHERE deleted_at IS NOT NULL ORDER BY clio_id")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// Stored contacts whose record JSON has every key in `keys`.
async fn rows_with_keys(stack: &Stack, keys: &[&str]) -> i64 {
    let mut db = stack.import_database.connect().await;
    sqlx::query_scalar("SELECT count(*) FROM contacts WHERE data ?& $1")
        .bind(keys)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// The connection's contacts high-water mark and the job that set it.
async fn high_water(
    stack: &Stack,
    connection: &str,
) -> Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_as(
        "SELECT high_water, job_id FROM sync_marks WHERE connection_id = $1 AND resource = 'contacts'",
    )
    .bind(connection)
    .fetch_optional(&mut db)
    .await
    .unwrap()
}

/// `status` for the next `count` calls to the contacts endpoint.
fn contacts_status(status: u16, count: u32) -> Fault {
    Fault::Status {
        status,
        count: Some(count),
        fraction: None,
        path_prefix: Some("/api/v4/contacts".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consumer_holds_no_more_jobs_than_its_prefetch() {
    let mut sim = sim_with(contacts_only(1_000));
    sim.page_delay = Some(Duration::from_millis(200));
    let stack = Stack::start(
        "prefetch",
        StackSetup {
            sim,
            import: Box::new(|config| {
                config.amqp.prefetch = 2;
                // Five jobs of one connection, all allowed to run at once: only the
                // prefetch holds them back.
                config.importer.max_jobs_per_connection = 5;
            }),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    let jobs: Vec<_> = (0..5)
        .map(|_| full_job(&connection, &["contacts"]))
        .collect();
    for job in &jobs {
        stack.publish(job).await;
    }

    // Two jobs are taken and run; the other three wait in the queue, where another
    // replica could take them, instead of sitting unacknowledged in this consumer.
    let db = sqlx::PgPool::connect(&stack.import_database.url)
        .await
        .unwrap();
    poll_until(
        "two jobs running and three ready in the queue",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let taken: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
                .fetch_one(&db)
                .await
                .ok()?;
            let ready = stack.broker.ready_count(&stack.topology.jobs_queue).await;
            (taken == 2 && ready == 3).then_some(())
        },
    )
    .await;
    for job in &jobs {
        assert_completed(&stack.finished(&job.job_id, Duration::from_secs(60)).await);
    }
    stack.stop().await;
}
