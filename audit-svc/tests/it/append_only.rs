//! The log is append-only in the schema: the service's role has no UPDATE or DELETE, and a
//! trigger refuses both even to the superuser the tests connect as.

use harness::TestDatabase;
use sqlx::{Connection, PgConnection};

use crate::support::{Setup, import_events, start};

async fn refused(db: &mut PgConnection, statement: &str) -> String {
    // Each attempt in its own transaction, rolled back, so one failure does not hide the next.
    let mut tx = db.begin().await.unwrap();
    let error = sqlx::query(statement)
        .execute(&mut *tx)
        .await
        .expect_err(statement)
        .to_string();
    tx.rollback().await.unwrap();
    error
}

#[tokio::test]
async fn neither_the_service_role_nor_the_superuser_can_change_the_log() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    audit.record(import_events("firm-a", 12)).await.unwrap();
    let mut db = database.connect().await;

    // As the role the service works as.
    sqlx::query("SET ROLE audit_appender")
        .execute(&mut db)
        .await
        .unwrap();
    for statement in [
        "UPDATE events SET reason = 'x'",
        "DELETE FROM events",
        "UPDATE checkpoints SET signature = 'x'",
        "DELETE FROM checkpoints",
    ] {
        let error = refused(&mut db, statement).await;
        assert!(error.contains("permission denied"), "{statement}: {error}");
    }
    sqlx::query("RESET ROLE").execute(&mut db).await.unwrap();

    // As the superuser: the trigger is what stops it.
    for statement in [
        "UPDATE events SET reason = 'x' WHERE sequence = 3",
        "DELETE FROM events WHERE sequence = 3",
        "TRUNCATE events",
        "UPDATE checkpoints SET signature = 'x'",
        "DELETE FROM checkpoints",
    ] {
        let error = refused(&mut db, statement).await;
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(count, 12);
    audit.stop().await;
}
