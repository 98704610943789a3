//! Page writes never take the whole pool. A job writes up to three pages of a listing at
//! once, each holding a pooled connection until its turn to commit; only the oldest write
//! of each job takes one freely, the others need one of the pool's extra write slots
//! (`import_svc::job::write_slots`). Here every page commit is held up (a lock on the
//! checkpoint rows), so writes pile up as they would behind a slow Postgres: they must
//! stop at the pool less its reserve, and `GetJob` beside them must still answer.

use std::time::Duration;

use clio_sim::{DatasetSize, Region, SimConfig};
use harness::{TestDatabase, poll_until};
use import_svc::job::write_slots::POOL_RESERVE;
use sqlx::Connection;

use crate::import_jobs::assert_completed;
use crate::stack::{Stack, StackSetup, full_job};

const POOL: u32 = 6;
const JOBS: usize = 2;
/// 100 pages a job: far from done when the lock is taken after its first page.
const RECORDS: u64 = 20_000;

/// Page writes of import-svc's database holding a connection: blocked on the checkpoint
/// rows, or stored and waiting for their turn to commit.
async fn page_writes(db: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND (query ILIKE 'UPDATE job_resources%'
                OR (state = 'idle in transaction'
                    AND (query ILIKE '%INSERT INTO contacts%' OR query ILIKE '%INSERT INTO matters%')))",
    )
    .fetch_one(&mut db.connect().await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_held_up_at_commit_stay_within_the_pool_less_its_reserve_and_get_job_answers() {
    let setup = StackSetup {
        sim: SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            dataset: DatasetSize {
                contacts: RECORDS,
                matters: RECORDS,
                ..DatasetSize::default()
            },
            ..SimConfig::default()
        },
        import: Box::new(|config| {
            config.importer.max_concurrent_jobs = JOBS;
            config.importer.max_jobs_per_connection = JOBS;
            config.amqp.prefetch = u16::try_from(JOBS).unwrap();
            config.service.database.max_connections = POOL;
            // A starved pool shows as GetJob failing after this long.
            config.service.database.acquire_timeout_ms = 1_500;
        }),
        ..StackSetup::default()
    };
    // The bound: the pool less its reserve (here one write per job and the one extra slot).
    let most_writes = i64::from(POOL - POOL_RESERVE);
    let stack = Stack::start("page_writes", setup).await;
    let connection = stack
        .connect(&["contacts:read", "matters:read"], "pat@firm-1", 1)
        .await;
    // Two listings that share no row, so only the lock below holds them up.
    let contacts = stack.submit(full_job(&connection, &["contacts"])).await;
    let matters = stack.submit(full_job(&connection, &["matters"])).await;

    // Once both jobs have stored a page, hold up every page commit (the checkpoint update).
    for job_id in [&contacts, &matters] {
        poll_until(
            &format!("job {job_id} to store a page"),
            Duration::from_secs(30),
            Duration::from_millis(10),
            || async {
                let job = stack.try_job(job_id).await?;
                (job.progress.first()?.pages > 0).then_some(())
            },
        )
        .await;
    }
    let mut locker = stack.import_database.connect().await;
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM job_resources FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();

    // The writes pile up to the bound: the jobs' own write each, and the extra slot.
    poll_until(
        "page writes to pile up behind the lock",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { (page_writes(&stack.import_database).await >= most_writes).then_some(()) },
    )
    .await;
    // And stay there while the jobs keep fetching pages they cannot yet write.
    for _ in 0..10 {
        let held = page_writes(&stack.import_database).await;
        assert!(
            held <= most_writes,
            "page writes hold {held} of {POOL} connections"
        );
        // The API still gets a connection.
        for job_id in [&contacts, &matters] {
            let job = stack.job(job_id).await;
            assert!(!job.progress.is_empty(), "{job:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    lock.rollback().await.unwrap();
    for job_id in [&contacts, &matters] {
        let job = stack.finished(job_id, Duration::from_secs(60)).await;
        assert_completed(&job);
        assert_eq!(job.progress[0].records_fetched, RECORDS, "{job:?}");
    }
    assert_eq!(
        stack.stored("contacts").await.0,
        i64::try_from(RECORDS).unwrap()
    );
    assert_eq!(
        stack.stored("matters").await.0,
        i64::try_from(RECORDS).unwrap()
    );
    stack.stop().await;
}
