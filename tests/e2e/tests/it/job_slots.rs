//! A replica runs as many jobs at once as it has job slots, however few database
//! connections its pool has: each running job holds a connection (its advisory lock) for
//! its whole run, rate-limit waits included, so those come from a pool of their own and
//! never starve the page writes and API calls of the shared one.

use std::time::Duration;

use clio_sim::{DatasetSize, Fault, Region, SimConfig};

use crate::import_jobs::assert_completed;
use crate::stack::{Stack, StackSetup, full_job};

const JOBS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_running_jobs_than_database_connections_all_complete() {
    let setup = StackSetup {
        sim: SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            dataset: DatasetSize {
                contacts: 400,
                ..DatasetSize::default()
            },
            ..SimConfig::default()
        },
        import: Box::new(|config| {
            config.importer.max_concurrent_jobs = JOBS;
            // All of one connection's jobs at once: the slots, not the connection, bound them.
            config.importer.max_jobs_per_connection = JOBS;
            config.amqp.prefetch = u16::try_from(JOBS).unwrap();
            config.service.database.max_connections = 2;
        }),
        ..StackSetup::default()
    };
    let stack = Stack::start("job_slots", setup).await;
    let connection = stack.connect(&["contacts:read"], "pat@firm-1", 1).await;
    // A slow Clio keeps every job running while the others start and write.
    stack
        .fault(Fault::Latency {
            ms: 300,
            count: None,
        })
        .await;

    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        jobs.push(stack.submit(full_job(&connection, &["contacts"])).await);
    }
    for job_id in &jobs {
        let job = stack.finished(job_id, Duration::from_secs(60)).await;
        assert_completed(&job);
        assert_eq!(job.progress[0].records_fetched, 400, "{job:?}");
    }
    stack.stop().await;
}
