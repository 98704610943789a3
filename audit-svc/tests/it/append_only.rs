//! The log is append-only in the schema: the service's role has no UPDATE or DELETE, and a
//! trigger refuses both even to the superuser the tests connect as. The service's own pool
//! really works as that role, although it logs in as the superuser.

use harness::TestDatabase;
use sqlx::{Connection, PgConnection};

use crate::support::{Setup, config, import_events, start};

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

#[tokio::test]
async fn the_service_pool_works_as_the_restricted_role() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    audit.record(import_events("firm-a", 3)).await.unwrap();

    // The pool the service builds, from the same config (its login is the superuser).
    let config = config(&database, &Setup::default());
    let pool = audit_svc::store::connect(&config.service.database)
        .await
        .unwrap();
    // Several connections held at once, so each is a fresh one: the role is set on every
    // connection the pool opens, not only the first.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.unwrap();
        let (current, session): (String, String) =
            sqlx::query_as("SELECT current_user::text, session_user::text")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(current, "audit_appender");
        // Still logged in as the configured user: the role is switched, not the login.
        assert_ne!(session, current);
        held.push(conn);
    }
    drop(held);

    for statement in [
        "UPDATE events SET reason = 'x' WHERE sequence = 2",
        "DELETE FROM events WHERE sequence = 2",
    ] {
        let error = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement)
            .to_string();
        // Refused by the missing privilege, before the trigger is ever reached.
        assert!(error.contains("permission denied"), "{statement}: {error}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
    pool.close().await;
    audit.stop().await;
}
