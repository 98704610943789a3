//! What an import leaves behind and who sees it: progress streamed while it runs, records
//! read back by consumers, the audit trail, retention, and fairness between connections.

use std::time::Duration;

use clio_sim::{DatasetSize, Fault, Region, SimConfig};
use harness::{poll_until, token_of, with_bearer};
use proto::common::v1::EventKind;
use proto::imports::v1 as import;
use proto::queue::{content_type, event_key};
use tokio_stream::StreamExt;

use crate::stack::{Stack, StackSetup, full_job};

const PERSON: &str = "bob@firm.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_streams_records_read_back_and_the_import_is_audited() {
    let mut sim = SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        dataset: DatasetSize {
            contacts: 1_000,
            ..DatasetSize::default()
        },
        ..SimConfig::default()
    };
    sim.page_delay = Some(Duration::from_millis(100));
    let stack = Stack::start(
        "results",
        StackSetup {
            sim,
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 2).await;
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;

    let updates = stack.watch_to_the_end(&job_id).await;
    // The first update is the job as it was when the watch began; page updates then
    // account for every record fetched after that.
    let mut page_records = None;
    for update in &updates {
        let job = update.job.as_ref().unwrap();
        let fetched: u64 = job.progress.iter().map(|p| p.records_fetched).sum();
        let counted = page_records.get_or_insert(fetched);
        if update.kind == import::job_progress::Kind::Page as i32 {
            *counted += u64::from(update.page_records);
        }
    }
    let last = updates.last().and_then(|u| u.job.clone());
    let pages: Vec<_> = updates
        .iter()
        .filter(|u| u.kind == import::job_progress::Kind::Page as i32)
        .collect();
    assert!(pages.iter().all(|p| p.resource == "contacts"), "{pages:?}");
    // Clio's lists carry no total, and nothing was imported before: no ETA yet.
    assert!(pages.iter().all(|p| p.eta_seconds == 0), "{pages:?}");
    let last = last.unwrap();
    assert_eq!(last.status, import::JobStatus::Completed as i32);
    assert_eq!(page_records, Some(1_000), "every page was reported");

    // Consumers page through what was imported, or stream it.
    let account = last.clio_account_id.clone();
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    loop {
        let page = stack
            .import()
            .await
            .list_records(with_bearer(
                import::ListRecordsRequest {
                    clio_account_id: account.clone(),
                    resource: "contacts".into(),
                    page_size: 300,
                    page_token: token,
                    ..Default::default()
                },
                &token_of("data_reader"),
            ))
            .await
            .unwrap()
            .into_inner();
        for record in &page.records {
            assert!(
                seen.insert(record.clio_id.clone()),
                "{} twice",
                record.clio_id
            );
            let data: serde_json::Value = serde_json::from_str(&record.data_json).unwrap();
            assert!(data.get("name").is_some(), "{data}");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 1_000);
    let exported = stack
        .import()
        .await
        .export_records(with_bearer(
            import::ExportRecordsRequest {
                clio_account_id: account,
                resource: "contacts".into(),
                ..Default::default()
            },
            &token_of("data_reader"),
        ))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(exported.len(), 1_000);

    // The firm's audit trail shows the import starting and completing, for this job.
    let events = poll_until(
        "import events in audit-svc",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let found = stack
                .audit_events(
                    "firm-1",
                    &[EventKind::ImportStarted, EventKind::ImportCompleted],
                )
                .await;
            (found.len() == 2).then_some(found)
        },
    )
    .await;
    for event in &events {
        assert_eq!(event.refs.as_ref().unwrap().job_id, job_id);
        assert_eq!(event.refs.as_ref().unwrap().connection_id, connection);
    }

    // The next full sync expects as many records as the last one left, so the watcher gets
    // an ETA until the last page is in.
    let again = stack.submit(full_job(&connection, &["contacts"])).await;
    let updates = stack.watch_to_the_end(&again).await;
    let pages: Vec<_> = updates
        .iter()
        .filter(|u| u.kind == import::job_progress::Kind::Page as i32)
        .collect();
    let unfinished: Vec<_> = pages
        .iter()
        .filter(|p| p.job.as_ref().unwrap().progress[0].records_fetched < 1_000)
        .collect();
    assert!(!unfinished.is_empty(), "{updates:?}");
    assert!(
        unfinished.iter().all(|p| p.eta_seconds > 0),
        "{unfinished:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calendar_entries_are_purged_after_their_retention_window() {
    let stack = Stack::start(
        "retention",
        StackSetup {
            import: Box::new(|config| config.retention.purge_interval_ms = 100),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack
        .connect(&["contacts:read", "calendar:read"], PERSON, 2)
        .await;
    let job = stack
        .submit(full_job(&connection, &["contacts", "calendar_entries"]))
        .await;
    let done = stack.finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done.status, import::JobStatus::Completed as i32);
    let (calendar, _) = stack.stored("calendar_entries").await;
    let (contacts, _) = stack.stored("contacts").await;
    assert!(calendar > 0 && contacts > 0);

    // A day later calendar entries (24 h by default) are gone; contacts are kept.
    stack.import_clock.advance(chrono::Duration::hours(25));
    poll_until(
        "calendar entries to be purged",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (stack.stored("calendar_entries").await.1 == 0).then_some(()) },
    )
    .await;
    assert_eq!(stack.stored("contacts").await, (contacts, contacts));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_connections_big_job_does_not_hold_up_another_connection() {
    let stack = Stack::start(
        "fairness",
        StackSetup {
            sim: SimConfig {
                regions: vec![Region::Us],
                // 5 requests a second per token: the big job needs 8 s.
                rate_limit: Some(clio_sim::RateLimit {
                    limit: 5,
                    window: Duration::from_secs(1),
                }),
                dataset: DatasetSize {
                    contacts: 8_000,
                    users: 3,
                    ..DatasetSize::default()
                },
                ..SimConfig::default()
            },
            ..StackSetup::default()
        },
    )
    .await;
    let busy = stack
        .connect(&["contacts:read"], "carol@firm.example", 1)
        .await;
    let other = stack.connect(&["users:read"], "dave@firm.example", 2).await;

    let big = stack.submit(full_job(&busy, &["contacts"])).await;
    let small = stack.submit(full_job(&other, &["users"])).await;
    let small_done = stack.finished(&small, Duration::from_secs(10)).await;
    assert_eq!(small_done.status, import::JobStatus::Completed as i32);
    let big_now = stack.job(&big).await;
    assert_eq!(
        big_now.status,
        import::JobStatus::Running as i32,
        "the small job finished while the big one was still running"
    );
    let big_done = stack.finished(&big, Duration::from_secs(60)).await;
    assert_eq!(big_done.status, import::JobStatus::Completed as i32);
    stack.stop().await;
}

/// Reads the job events on `queue` until one with `last_key` arrives.
async fn job_events_until(
    stack: &Stack,
    queue: &str,
    last_key: &str,
) -> Vec<(String, import::Job)> {
    let mut events = Vec::new();
    loop {
        let message = stack
            .broker
            .next_message(queue, Duration::from_secs(30))
            .await;
        assert_eq!(
            message.content_type.as_deref(),
            Some(content_type::PROTOBUF)
        );
        let event: import::JobEvent = prost::Message::decode(message.body.as_slice()).unwrap();
        assert!(
            !event.event_id.is_empty() && event.at.is_some(),
            "{event:?}"
        );
        let done = message.routing_key == last_key;
        events.push((message.routing_key, event.job.unwrap()));
        if done {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downstream_teams_see_each_job_state_change_on_the_events_exchange() {
    let mut stack = Stack::start(
        "job_events",
        StackSetup {
            sim: SimConfig {
                regions: vec![Region::Us],
                rate_limit: None,
                dataset: DatasetSize {
                    contacts: 1_000,
                    ..DatasetSize::default()
                },
                ..SimConfig::default()
            },
            ..StackSetup::default()
        },
    )
    .await;
    // A downstream team listens to every job event through its own queue.
    let exchange = stack.topology.events_exchange.clone();
    let queue = stack.broker.subscribe(&exchange, event_key::ALL).await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;

    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    let events = job_events_until(&stack, &queue, "job.completed").await;
    let keys: Vec<&str> = events.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys.first(), Some(&"job.started"), "{keys:?}");
    // Progress as pages commit, at most one event per page (1,000 contacts in pages of
    // 200) and at most one per quarter second, the listing's last page always announced.
    let progress: Vec<&import::Job> = events
        .iter()
        .filter(|(key, _)| key == "job.progress")
        .map(|(_, job)| job)
        .collect();
    assert!((1..=5).contains(&progress.len()), "{keys:?}");
    let last = progress.last().unwrap();
    assert_eq!(last.progress[0].records_written, 1_000, "{last:?}");
    assert_eq!(keys.len(), progress.len() + 2, "{keys:?}");
    let mut fetched = 0;
    for (_, job) in &events {
        assert_eq!(job.job_id, job_id);
        assert_eq!(job.connection_id, connection);
        // Each event carries the job as committed: progress only grows.
        let now = job.progress.iter().map(|p| p.records_fetched).sum::<u64>();
        assert!(now >= fetched, "{events:?}");
        fetched = now;
    }
    let (_, completed) = events.last().unwrap();
    assert_eq!(completed.status, import::JobStatus::Completed as i32);
    assert_eq!(completed.progress[0].records_written, 1_000);
    assert!(completed.finished_at.is_some());

    // A job refused before any Clio call is announced as dead-lettered, with its reason.
    let refused = full_job(&connection, &["matters"]);
    stack.publish(&refused).await;
    let events = job_events_until(&stack, &queue, "job.dead_lettered").await;
    let (_, dead) = events.last().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(dead.job_id, refused.job_id);
    assert_eq!(dead.status, import::JobStatus::DeadLettered as i32);
    assert!(dead.failure_reason.contains("matters:read"), "{dead:?}");

    // A job that fails mid-run (the grant is revoked at its third page) is announced as
    // failed, the reason in the job as GetJob shows it.
    stack.fault(Fault::RevokeAfter { calls: 3 }).await;
    let failing = stack.submit(full_job(&connection, &["contacts"])).await;
    let events = job_events_until(&stack, &queue, "job.failed").await;
    let keys: Vec<&str> = events.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys.first(), Some(&"job.started"), "{keys:?}");
    assert_eq!(keys.last(), Some(&"job.failed"), "{keys:?}");
    assert!(
        keys[1..keys.len() - 1].iter().all(|k| *k == "job.progress"),
        "{keys:?}"
    );
    assert!(events.iter().all(|(_, job)| job.job_id == failing));
    let (_, failed) = events.last().unwrap();
    assert_eq!(
        failed.progress[0].pages, 2,
        "two pages committed before the revocation: {failed:?}"
    );
    assert_eq!(failed.status, import::JobStatus::Failed as i32);
    assert!(failed.finished_at.is_some());
    assert!(
        failed.failure_reason.contains("reconnect") || failed.failure_reason.contains("revoked"),
        "{}",
        failed.failure_reason
    );
    assert_eq!(
        failed.failure_reason,
        stack.job(&failing).await.failure_reason
    );
    stack.stop().await;
}
