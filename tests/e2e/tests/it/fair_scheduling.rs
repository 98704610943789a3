//! Fair scheduling: one connection's backlog never holds up another connection, higher
//! priorities start first, and a connection runs one job at a time across replicas.
//!
//! Every test runs import-svc with few job slots and a slow Clio, so jobs queue up the
//! way they do under load, and reads the order from the jobs' own `started_at`.

use std::time::Duration;

use clio_sim::{DatasetSize, Fault, Region, SimConfig};
use proto::imports::v1 as import;

use crate::import_jobs::assert_completed;
use crate::stack::{Stack, StackSetup, full_job};

/// Contacts per account; with `PAGE_SIZE` and the latency below a job takes about a
/// second.
const CONTACTS: u64 = 100;
const PAGE_SIZE: u32 = 25;
const LATENCY_MS: u64 = 150;

fn setup(slots: usize) -> StackSetup {
    StackSetup {
        sim: SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            dataset: DatasetSize {
                contacts: CONTACTS,
                ..DatasetSize::default()
            },
            ..SimConfig::default()
        },
        import: Box::new(move |config| {
            config.importer.max_concurrent_jobs = slots;
            config.importer.page_size = PAGE_SIZE;
            config.amqp.prefetch = 16;
            // Deferred jobs come back quickly, so the test sees many round trips.
            config.amqp.defer_delay_ms = 300;
            config.amqp.max_defer_delay_ms = 600;
        }),
        ..StackSetup::default()
    }
}

fn started(job: &import::Job) -> chrono::DateTime<chrono::Utc> {
    job.started_at
        .as_ref()
        .and_then(proto::time::date_time)
        .expect("the job started")
}

fn finished(job: &import::Job) -> chrono::DateTime<chrono::Utc> {
    job.finished_at
        .as_ref()
        .and_then(proto::time::date_time)
        .expect("the job finished")
}

fn with_priority(connection: &str, priority: import::JobPriority) -> import::ImportJob {
    import::ImportJob {
        priority: priority as i32,
        ..full_job(connection, &["contacts"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_queued_jobs_of_one_connection_delay_another_connections_job_by_one_job_at_most() {
    let stack = Stack::start("fair_backlog", setup(1)).await;
    let busy = stack.connect(&["contacts:read"], "pat@firm-1", 1).await;
    let other = stack.connect(&["contacts:read"], "sam@firm-1", 2).await;
    stack
        .fault(Fault::Latency {
            ms: LATENCY_MS,
            count: None,
        })
        .await;

    let mut backlog = Vec::new();
    for _ in 0..50 {
        backlog.push(stack.submit(full_job(&busy, &["contacts"])).await);
    }
    // The backlog's first job is running when the other connection's job arrives.
    let first = backlog[0].clone();
    harness::poll_until(
        "the backlog's first job to start",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { stack.job(&first).await.started_at.map(|_| ()) },
    )
    .await;
    let submitted = chrono::Utc::now();
    let awaited = stack.submit(full_job(&other, &["contacts"])).await;
    let awaited = stack.finished(&awaited, Duration::from_secs(60)).await;
    assert_completed(&awaited);

    // Which of the backlog's jobs started while the other connection's job waited.
    let mut cut_in = Vec::new();
    let mut durations = Vec::new();
    for job_id in &backlog {
        let job = stack.job(job_id).await;
        if let (Some(_), Some(_)) = (&job.started_at, &job.finished_at) {
            durations.push(finished(&job) - started(&job));
        }
        if job.started_at.is_some()
            && started(&job) > submitted
            && started(&job) < started(&awaited)
        {
            cut_in.push(job_id.clone());
        }
    }
    let waited = started(&awaited) - submitted;
    let longest = durations.iter().max().copied().unwrap_or_default();
    println!(
        "other connection's job waited {} ms; the backlog's longest job took {} ms; {} of its jobs started meanwhile",
        waited.num_milliseconds(),
        longest.num_milliseconds(),
        cut_in.len()
    );
    // The job running when it arrived, and at most one starting at the same moment.
    assert!(
        cut_in.len() <= 1,
        "the backlog's jobs {cut_in:?} started ahead of the other connection's job"
    );
    assert!(
        waited <= longest * 2,
        "waited {waited} behind jobs of at most {longest}"
    );
    let still_queued = {
        let mut queued = 0;
        for job_id in &backlog {
            if stack.job(job_id).await.status == import::JobStatus::Queued as i32 {
                queued += 1;
            }
        }
        queued
    };
    assert!(
        still_queued >= 40,
        "the backlog ran ahead ({still_queued} still queued): the test proves nothing"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interactive_jobs_start_before_scheduled_ones_and_those_before_a_backfill() {
    let stack = Stack::start("fair_priority", setup(1)).await;
    let mut connections = Vec::new();
    for (n, person) in ["ann", "bob", "cat", "dan"].iter().enumerate() {
        let clio_user = i64::try_from(n).unwrap() + 1;
        connections.push(
            stack
                .connect(&["contacts:read"], &format!("{person}@firm-1"), clio_user)
                .await,
        );
    }
    stack
        .fault(Fault::Latency {
            ms: LATENCY_MS,
            count: None,
        })
        .await;
    // One job takes the only slot; the others arrive while it runs, lowest priority first.
    let blocker = stack.submit(full_job(&connections[0], &["contacts"])).await;
    harness::poll_until(
        "the first job to start",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { stack.job(&blocker).await.started_at.map(|_| ()) },
    )
    .await;
    let backfill = stack
        .submit(with_priority(
            &connections[1],
            import::JobPriority::Backfill,
        ))
        .await;
    let scheduled = stack
        .submit(with_priority(
            &connections[2],
            import::JobPriority::Scheduled,
        ))
        .await;
    let interactive = stack
        .submit(with_priority(
            &connections[3],
            import::JobPriority::Interactive,
        ))
        .await;
    let blocker = stack.finished(&blocker, Duration::from_secs(60)).await;
    assert_completed(&blocker);

    let mut jobs = Vec::new();
    for job_id in [&interactive, &scheduled, &backfill] {
        let job = stack.finished(job_id, Duration::from_secs(60)).await;
        assert_completed(&job);
        jobs.push(job);
    }
    assert!(
        started(&jobs[0]) < started(&jobs[1]) && started(&jobs[1]) < started(&jobs[2]),
        "started: interactive {}, scheduled {}, backfill {}",
        started(&jobs[0]),
        started(&jobs[1]),
        started(&jobs[2])
    );
    assert_eq!(jobs[2].priority, import::JobPriority::Backfill as i32);
    assert_eq!(jobs[0].priority, import::JobPriority::Interactive as i32);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_run_two_jobs_of_one_connection_at_once() {
    let mut stack = Stack::start("fair_replicas", setup(4)).await;
    stack.start_import_replica().await;
    let connection = stack.connect(&["contacts:read"], "pat@firm-1", 1).await;
    stack
        .fault(Fault::Latency {
            ms: LATENCY_MS / 3,
            count: None,
        })
        .await;
    let mut job_ids = Vec::new();
    for _ in 0..6 {
        job_ids.push(stack.submit(full_job(&connection, &["contacts"])).await);
    }
    let mut runs = Vec::new();
    for job_id in &job_ids {
        let job = stack.finished(job_id, Duration::from_secs(90)).await;
        assert_completed(&job);
        runs.push((started(&job), finished(&job)));
    }
    runs.sort();
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a job started at {} while another of the same connection ran until {}",
            pair[1].0,
            pair[0].1
        );
    }
    stack.stop().await;
}
