//! Record upserts on real Postgres: an older version of a record never overwrites a newer
//! one, whatever order Clio's pages arrive in.

use chrono::{DateTime, Utc};
use harness::TestDatabase;
use import_svc::records::{Target, upsert_page};
use scope_catalog::Resource;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const ACCOUNT: &str = "acct-1";

fn contact(name: &str, etag: &str, updated_at: &str) -> Value {
    json!({ "id": 42, "etag": etag, "name": name, "updated_at": updated_at })
}

/// Upserts `record` as one page of its own; returns how many rows it added or changed.
async fn upsert(pool: &PgPool, record: Value) -> u64 {
    let target = Target {
        resource: Resource::Contacts,
        account_id: ACCOUNT,
        connection_id: "c-1",
        job_id: Uuid::new_v4(),
        now: Utc::now(),
    };
    let mut tx = pool.begin().await.unwrap();
    let upserted = upsert_page(&mut tx, &target, &[record]).await.unwrap();
    tx.commit().await.unwrap();
    upserted.rows
}

/// The stored name, etag and updated_at of contact 42.
async fn stored(pool: &PgPool) -> (String, String, DateTime<Utc>) {
    sqlx::query_as(
        "SELECT data->>'name', etag, updated_at FROM contacts
         WHERE clio_account_id = $1 AND clio_id = 42",
    )
    .bind(ACCOUNT)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();

    let noon = "2024-05-01T12:00:00Z";
    assert_eq!(upsert(&pool, contact("Newer Name", "e2", noon)).await, 1);

    // A page read before the edit arrives late: it is not a write and changes nothing.
    let older = contact("Older Name", "e1", "2024-05-01T11:00:00Z");
    assert_eq!(upsert(&pool, older).await, 0);
    assert_eq!(
        stored(&pool).await,
        ("Newer Name".to_owned(), "e2".to_owned(), at(noon))
    );

    // A later edit replaces it.
    let later = "2024-05-01T13:00:00Z";
    assert_eq!(upsert(&pool, contact("Latest Name", "e3", later)).await, 1);
    assert_eq!(
        stored(&pool).await,
        ("Latest Name".to_owned(), "e3".to_owned(), at(later))
    );
    pool.close().await;
}

/// A first import of a large account runs ahead of Postgres's statistics (ANALYZE has not
/// seen its rows yet). Each page must still cost about its own size: the upsert looks up
/// each of its records by key, and never reads the rows the account already has (a hash
/// join over the account on every page made a large first import quadratic).
#[tokio::test]
async fn a_page_reads_only_its_own_records_while_statistics_lag_behind() {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();
    // Statistics stay as they are (empty table) while the account grows, as they do
    // between two autovacuum runs.
    sqlx::query("ALTER TABLE contacts SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE contacts")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO contacts (clio_account_id, clio_id, etag, updated_at, data, connection_id)
         SELECT $1, g, 'e', now(), jsonb_build_object('id', g), 'c-1'
         FROM generate_series(1, 20000) g",
    )
    .bind(ACCOUNT)
    .execute(&pool)
    .await
    .unwrap();

    let page: Vec<Value> = (30_000..30_200)
        .map(|id| json!({ "id": id, "etag": "e", "updated_at": "2024-05-01T12:00:00Z" }))
        .collect();
    let target = Target {
        resource: Resource::Contacts,
        account_id: ACCOUNT,
        connection_id: "c-1",
        job_id: Uuid::new_v4(),
        now: Utc::now(),
    };
    let mut tx = pool.begin().await.unwrap();
    let upserted = upsert_page(&mut tx, &target, &page).await.unwrap();
    assert_eq!(upserted.rows, 200);
    // This transaction's own reads of the table so far.
    let (sequential, by_index): (i64, i64) = sqlx::query_as(
        "SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables
         WHERE relname = 'contacts'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(
        sequential + by_index <= 200,
        "a page of 200 new records read {sequential} rows by scan and {by_index} by index \
         from an account of 20,000"
    );
}
