//! The projections heal themselves: a service started on a database whose projection
//! tables were dropped, emptied or left behind the log rebuilds them from the log, and
//! `audit-svc rebuild-projections` does the same on an operator's demand.

use std::process::Command;

use harness::TestDatabase;
use proto::audit::v1 as api;
use service_runtime::clock::ManualClock;

use crate::compliance::{all_views, attest, day, generate_review, history};
use crate::support::{RunningAudit, SEED_HEX, Setup, start};

/// The service with its clock where the compliance history leaves it, so idle ages (and
/// so the views) are the same across restarts.
async fn start_on_day_120(database: &TestDatabase) -> RunningAudit {
    let clock = ManualClock::default();
    clock.set(day(120));
    let setup = Setup {
        clock: Some(clock),
        ..Setup::default()
    };
    start(database, setup).await
}

/// Records the compliance history and a quarterly review with one decision; returns the
/// review id and every view's answer.
async fn scripted_history(audit: &RunningAudit) -> (String, String) {
    audit.record(history()).await.unwrap();
    let mut c = audit.compliance().await;
    let review = generate_review(&mut c, 2).await.unwrap();
    let revoke = api::ReviewDecision::Revoke as i32;
    attest(&mut c, &review.review_id, "c3", revoke, "unused".into())
        .await
        .unwrap();
    let views = all_views(audit, &review.review_id).await;
    (review.review_id, views)
}

/// Runs statements as the superuser the tests connect as, bypassing the service.
async fn as_superuser(database: &TestDatabase, statements: &[&str]) {
    let mut db = database.connect().await;
    for statement in statements {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
}

async fn scalar(database: &TestDatabase, query: &str) -> String {
    let mut db = database.connect().await;
    sqlx::query_scalar(query).fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn a_restart_rebuilds_dropped_emptied_and_lagging_projections() {
    let database = TestDatabase::create().await;
    let audit = start_on_day_120(&database).await;
    let (review_id, before) = scripted_history(&audit).await;
    audit.stop().await;

    // One table dropped (with the foreign key of the review items), another emptied.
    as_superuser(
        &database,
        &[
            "DROP TABLE proj_reviews CASCADE",
            "TRUNCATE proj_connections",
        ],
    )
    .await;
    let audit = start_on_day_120(&database).await;
    assert_eq!(all_views(&audit, &review_id).await, before);
    let foreign_keys = scalar(
        &database,
        "SELECT count(*)::text FROM pg_constraint \
         WHERE conrelid = 'proj_review_items'::regclass AND contype = 'f'",
    )
    .await;
    assert_eq!(
        foreign_keys, "1",
        "the recreated tables are the migrated ones"
    );
    audit.stop().await;

    // Only emptied, version unchanged.
    as_superuser(&database, &["TRUNCATE proj_apps"]).await;
    let audit = start_on_day_120(&database).await;
    assert_eq!(all_views(&audit, &review_id).await, before);
    audit.stop().await;

    // Behind the log (as if events had been restored without their projections): the
    // views cannot show it, the rebuild time does.
    as_superuser(
        &database,
        &[
            "UPDATE projection_heads SET sequence = sequence - 1",
            "UPDATE projection_state SET rebuilt_at = '2000-01-01T00:00:00Z'",
        ],
    )
    .await;
    let audit = start_on_day_120(&database).await;
    let rebuilt_at = scalar(&database, "SELECT rebuilt_at::text FROM projection_state").await;
    assert!(
        !rebuilt_at.starts_with("2000-"),
        "not rebuilt: {rebuilt_at}"
    );
    assert_eq!(all_views(&audit, &review_id).await, before);
    audit.stop().await;
}

/// Runs `audit-svc rebuild-projections` with the service's configuration in the
/// environment (and `database_url` as the database): exit code and output.
fn rebuild_command(database_url: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_audit-svc"))
        .arg("rebuild-projections")
        .env_remove("AUDIT_SVC_CONFIG")
        .env("AUDIT_SVC_SERVICE__DATABASE__URL", database_url)
        .env("AUDIT_SVC_SIGNING__KEY", SEED_HEX)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn the_rebuild_subcommand_refills_emptied_projections_and_names_a_bad_setting() {
    let database = TestDatabase::create().await;
    let audit = start_on_day_120(&database).await;
    let (review_id, before) = scripted_history(&audit).await;

    as_superuser(&database, &["TRUNCATE proj_connections, proj_writes"]).await;
    assert_ne!(all_views(&audit, &review_id).await, before);
    let (code, output) = rebuild_command(&database.url);
    assert_eq!(code, 0, "{output}");
    // The history, the review and its decision.
    let events = history().len() + 2;
    assert!(
        output.contains(&format!("{events} events replayed from 1 tenant(s)")),
        "{output}"
    );
    assert_eq!(all_views(&audit, &review_id).await, before);
    audit.stop().await;

    let (code, output) = rebuild_command("mysql://127.0.0.1/audit");
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("service.database.url"), "{output}");
}
