//! The shared per-app budget on real Postgres: `app_budget_take` hands out at most the
//! limit in a window across every caller (replicas are just more connections), answers
//! how long until a place frees, and keeps apps apart.

use std::time::{Duration, Instant};

use harness::TestDatabase;
use sqlx::PgPool;

async fn take(pool: &PgPool, app: &str, limit: i32, window_ms: i64) -> i64 {
    sqlx::query_scalar("SELECT app_budget_take($1, $2, $3)")
        .bind(app)
        .bind(limit)
        .bind(window_ms)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn migrated() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();
    (database, pool)
}

#[tokio::test]
async fn a_full_budget_answers_the_wait_until_its_oldest_place_frees_and_apps_are_apart() {
    let (_database, pool) = migrated().await;
    let window_ms = 1_500;
    for _ in 0..3 {
        assert_eq!(take(&pool, "us:app-a", 3, window_ms).await, 0);
    }
    let started = Instant::now();
    let wait = take(&pool, "us:app-a", 3, window_ms).await;
    assert!(
        wait > 0 && wait <= window_ms,
        "a full budget answers a wait within the window, got {wait} ms"
    );
    // Another app (or the same client id in another region) has its own budget.
    assert_eq!(take(&pool, "us:app-b", 3, window_ms).await, 0);
    assert_eq!(take(&pool, "eu:app-a", 3, window_ms).await, 0);

    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap())).await;
    assert_eq!(
        take(&pool, "us:app-a", 3, window_ms).await,
        0,
        "a place is free once the oldest left the window ({} ms later)",
        started.elapsed().as_millis()
    );
}

#[tokio::test]
async fn callers_on_separate_pools_together_never_exceed_the_limit() {
    let (database, _pool) = migrated().await;
    // Two "replicas", each with its own pool and four callers taking places as fast as
    // they are given.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(PgPool::connect(&database.url).await.unwrap());
    }
    let limit = 10;
    let window = Duration::from_millis(700);
    let run_for = Duration::from_millis(1_900);
    let started = Instant::now();
    let mut callers = Vec::new();
    for pool in &replicas {
        for _ in 0..4 {
            let pool = pool.clone();
            callers.push(tokio::spawn(async move {
                let mut taken = 0;
                while started.elapsed() < run_for {
                    let wait = take(&pool, "us:shared", limit, window.as_millis() as i64).await;
                    if wait == 0 {
                        taken += 1;
                    } else {
                        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    }
                }
                taken
            }));
        }
    }
    let mut taken = 0;
    for caller in callers {
        taken += caller.await.unwrap();
    }
    // 1.9 s spans parts of three windows of 0.7 s: at most three limits' worth, and the
    // callers were never locked out for good (more than two windows' worth).
    let windows = run_for.as_millis().div_ceil(window.as_millis());
    let most = i32::try_from(windows).unwrap() * limit;
    println!("{taken} places taken in {run_for:?} with {limit} per {window:?}");
    assert!(
        taken <= most,
        "{taken} places taken, at most {most} allowed"
    );
    assert!(
        taken > 2 * limit,
        "only {taken} places taken: the budget starved its callers"
    );
}
