//! The last line of defence on real Postgres: a page whose upsert Postgres refuses as bad
//! data is stored record by record; the refused records are skipped with their reason and
//! counted, the others stored exactly, and a skipped record with an id still counts as
//! seen.

use chrono::Utc;
use clio_api::SkippedRecord;
use harness::TestDatabase;
use import_svc::job::page_records::store_page;
use import_svc::records::Target;
use scope_catalog::Resource;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const ACCOUNT: &str = "acct-1";
const CONNECTION: &str = "c-1";

#[tokio::test]
async fn a_page_postgres_refuses_is_stored_record_by_record() {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();
    let job_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO jobs (job_id, connection_id, resources, mode, status)
         VALUES ($1, $2, '{contacts}', 'full', 'running')",
    )
    .bind(job_id)
    .bind(CONNECTION)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO job_resources (job_id, resource) VALUES ($1, 'contacts')")
        .bind(job_id)
        .execute(&pool)
        .await
        .unwrap();
    let target = Target {
        resource: Resource::Contacts,
        account_id: ACCOUNT,
        connection_id: CONNECTION,
        job_id,
        now: Utc::now(),
    };

    // Contact 5 is stored already; this page's version of it was checked out before.
    let mut tx = pool.begin().await.unwrap();
    store_page(
        &pool,
        &mut tx,
        &target,
        &[json!({"id": 5, "name": "five"})],
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("UPDATE contacts SET seen_by = '{}'::jsonb")
        .execute(&pool)
        .await
        .unwrap();

    // A NUL the record checks would have caught: here it reaches Postgres, which refuses
    // the whole statement (22P05); only that record is lost.
    let good = [
        json!({"id": 1, "name": "Zoë 😀", "etag": "e1", "nested": {"deep": [1, 2.5, null]}}),
        json!({"id": 3, "name": "three"}),
    ];
    let page = [
        good[0].clone(),
        json!({"id": 2, "name": "a\u{0}b"}),
        good[1].clone(),
    ];
    let checked_out = [SkippedRecord::new(Some(json!(5)), "too deep")];
    let mut tx = pool.begin().await.unwrap();
    let stored = store_page(&pool, &mut tx, &target, &page, &checked_out)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored.upserted.rows, 2);
    assert_eq!(stored.skipped, 2);

    let rows: Vec<(i64, Value)> =
        sqlx::query_as("SELECT clio_id, data FROM contacts WHERE clio_id <> 5 ORDER BY clio_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(1, good[0].clone()), (3, good[1].clone())]);

    let skipped: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT clio_id, reason FROM skipped_records WHERE job_id = $1 ORDER BY id")
            .bind(job_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0.as_deref(), Some("5"));
    assert_eq!(skipped[0].1, "too deep");
    assert_eq!(skipped[1].0.as_deref(), Some("2"));
    assert!(
        skipped[1].1.starts_with("Postgres refused the record:"),
        "{skipped:?}"
    );
    let counted: i64 = sqlx::query_scalar(
        "SELECT records_skipped FROM job_resources WHERE job_id = $1 AND resource = 'contacts'",
    )
    .bind(job_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counted, 2);
    // The stored version of the skipped contact 5 is still seen through this connection.
    let seen: bool = sqlx::query_scalar("SELECT seen_by ? $1 FROM contacts WHERE clio_id = 5")
        .bind(CONNECTION)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(seen);
}
