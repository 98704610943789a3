//! Deletion sweeps on real Postgres: a connection's sweep only withdraws its own word that a
//! record exists, and a record is deleted only when no connection that saw it still does.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use harness::TestDatabase;
use import_svc::records::{Target, mark_seen, mark_unseen_deleted, upsert_page};
use scope_catalog::Resource;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

const ACCOUNT: &str = "acct-1";

async fn database() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();
    (database, pool)
}

fn target(connection_id: &str) -> Target<'_> {
    Target {
        resource: Resource::Contacts,
        account_id: ACCOUNT,
        connection_id,
        job_id: Uuid::new_v4(),
        now: Utc::now(),
    }
}

fn contacts(ids: &[i64]) -> Vec<Value> {
    ids.iter()
        .map(|id| json!({"id": id, "etag": format!("e{id}"), "updated_at": "2026-01-01T00:00:00Z"}))
        .collect()
}

/// A page of `ids` read through `connection`, committed.
async fn page(pool: &PgPool, connection: &str, ids: &[i64]) {
    let mut tx = pool.begin().await.unwrap();
    upsert_page(&mut tx, &target(connection), &contacts(ids))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// An id-only page (incremental sweep) read through `connection`, committed.
async fn ids_page(pool: &PgPool, connection: &str, ids: &[i64]) {
    let mut tx = pool.begin().await.unwrap();
    mark_seen(&mut tx, &target(connection), &contacts(ids))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A listing starts now (database time), as the checkpoint records it.
async fn listing_starts(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn sweep(pool: &PgPool, connection: &str, started: DateTime<Utc>) -> u64 {
    let mut tx = pool.begin().await.unwrap();
    let deleted = mark_unseen_deleted(&mut tx, &target(connection), started)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    deleted
}

async fn live(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT clio_id FROM contacts WHERE deleted_at IS NULL AND clio_account_id = $1 ORDER BY clio_id",
    )
    .bind(ACCOUNT)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_record_is_deleted_only_when_no_connection_that_saw_it_still_does() {
    let (_database, pool) = database().await;
    page(&pool, "alice", &[1, 2, 3]).await;
    page(&pool, "bob", &[2, 3, 4]).await;

    // Alice no longer sees 3: Bob still does, so it stays.
    let started = listing_starts(&pool).await;
    page(&pool, "alice", &[1, 2]).await;
    assert_eq!(sweep(&pool, "alice", started).await, 0);
    assert_eq!(live(&pool).await, [1, 2, 3, 4]);

    // Bob sees only 2 now: 3 and 4 had no one else, 1 was never his to judge.
    let started = listing_starts(&pool).await;
    page(&pool, "bob", &[2]).await;
    assert_eq!(sweep(&pool, "bob", started).await, 2);
    assert_eq!(live(&pool).await, [1, 2]);

    // A sweep that runs again deletes nothing more (the count is exact).
    assert_eq!(sweep(&pool, "bob", started).await, 0);

    // A record seen again is live again, vouched for by whoever saw it.
    page(&pool, "alice", &[4]).await;
    assert_eq!(live(&pool).await, [1, 2, 4]);
    pool.close().await;
}

#[tokio::test]
async fn overlapping_listings_of_one_connection_keep_what_either_saw_since_it_began() {
    let (_database, pool) = database().await;
    page(&pool, "alice", &[1, 2, 3]).await;

    // Listing one starts; listing two starts later and reads everything before one
    // reaches 3. Both finish: nothing was deleted in Clio, nothing is marked.
    let first = listing_starts(&pool).await;
    page(&pool, "alice", &[1]).await;
    let second = listing_starts(&pool).await;
    page(&pool, "alice", &[1, 2, 3]).await;
    assert_eq!(sweep(&pool, "alice", second).await, 0);
    page(&pool, "alice", &[2, 3]).await;
    assert_eq!(sweep(&pool, "alice", first).await, 0);
    assert_eq!(live(&pool).await, [1, 2, 3]);

    // Seen by listing one only before listing two began, and not by two: gone.
    let first = listing_starts(&pool).await;
    page(&pool, "alice", &[1, 2, 3]).await;
    let second = listing_starts(&pool).await;
    page(&pool, "alice", &[1, 3]).await;
    assert_eq!(sweep(&pool, "alice", first).await, 0);
    assert_eq!(sweep(&pool, "alice", second).await, 1);
    assert_eq!(live(&pool).await, [1, 3]);
    pool.close().await;
}

#[tokio::test]
async fn an_id_listing_vouches_for_live_records_only() {
    let (_database, pool) = database().await;
    page(&pool, "alice", &[1, 2, 3]).await;
    let started = listing_starts(&pool).await;
    page(&pool, "alice", &[1, 2]).await;
    assert_eq!(sweep(&pool, "alice", started).await, 1);

    // The incremental sweep lists 1 and 3: 3 stays deleted until a read restores its
    // content; 2 was not listed and goes.
    let started = listing_starts(&pool).await;
    ids_page(&pool, "alice", &[1, 3]).await;
    assert_eq!(sweep(&pool, "alice", started).await, 1);
    assert_eq!(live(&pool).await, [1]);
    pool.close().await;
}

#[tokio::test]
async fn existing_rows_are_attributed_to_the_connection_that_stored_them() {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    let before = Migrator {
        migrations: Cow::Owned(
            import_svc::MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < 7)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO contacts (clio_account_id, clio_id, data, connection_id, stored_at, deleted_at)
         VALUES ($1, 1, '{}', 'alice', now() - interval '1 day', NULL),
                ($1, 2, '{}', 'bob', now() - interval '1 day', NULL),
                ($1, 3, '{}', 'alice', now() - interval '1 day', now())",
    )
    .bind(ACCOUNT)
    .execute(&pool)
    .await
    .unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();

    let seen: Vec<(i64, Vec<String>)> = sqlx::query_as(
        "SELECT clio_id, ARRAY(SELECT jsonb_object_keys(seen_by)) FROM contacts ORDER BY clio_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        seen,
        [
            (1, vec!["alice".to_owned()]),
            (2, vec!["bob".to_owned()]),
            (3, vec![])
        ]
    );
    // Alice's next full listing without 1 or 2 deletes only hers.
    let started = listing_starts(&pool).await;
    assert_eq!(sweep(&pool, "alice", started).await, 1);
    assert_eq!(live(&pool).await, [2]);
    pool.close().await;
}
