//! The periodic checkpoint task signs chain heads that moved fewer than `every_events`
//! since their last checkpoint, and leaves heads that did not move alone.

use std::time::Duration;

use audit_svc::checkpoint::checkpoint_moved_heads;
use audit_svc::signing::Signer;
use chrono::Utc;
use harness::{TestDatabase, poll_until};
use proto::audit::v1::VerifyRequest;

use crate::support::{RunningAudit, SEED_HEX, Setup, compliance, config, import_events, start};

/// Never reached by these tests, so every checkpoint here is a periodic one.
const EVERY_EVENTS: u64 = 1_000;

fn setup() -> Setup {
    Setup {
        checkpoint_every: EVERY_EVENTS,
        checkpoint_interval_ms: 100,
        ..Setup::default()
    }
}

/// The sequences of `tenant`'s checkpoints, in order.
async fn checkpoints(database: &TestDatabase, tenant: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT sequence FROM checkpoints WHERE tenant = $1 ORDER BY sequence")
        .bind(tenant)
        .fetch_all(&mut database.connect().await)
        .await
        .unwrap()
}

/// Waits until `tenant`'s checkpoints are exactly `expected`.
async fn wait_for_checkpoints(database: &TestDatabase, tenant: &str, expected: &[i64]) {
    poll_until(
        &format!("{tenant} checkpoints at {expected:?}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (checkpoints(database, tenant).await == expected).then_some(()) },
    )
    .await;
}

/// (events, checkpoints) checked by a whole-chain Verify that must pass.
async fn verified(audit: &RunningAudit, tenant: &str) -> (u64, u64) {
    let verdict = audit
        .audit()
        .await
        .verify(compliance(VerifyRequest {
            tenant: tenant.into(),
            from_sequence: 0,
            to_sequence: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.ok, "{verdict:?}");
    (verdict.events_checked, verdict.checkpoints_checked)
}

#[tokio::test]
async fn moved_heads_are_signed_periodically_and_still_heads_are_not() {
    let database = TestDatabase::create().await;
    let audit = start(&database, setup()).await;

    audit.record(import_events("firm-a", 3)).await.unwrap();
    wait_for_checkpoints(&database, "firm-a", &[3]).await;
    assert_eq!(verified(&audit, "firm-a").await, (3, 1));

    // firm-b moves after firm-a's checkpoint, so the round that signs firm-b started with
    // firm-a's head already signed and unmoved: it must not sign firm-a again.
    audit.record(import_events("firm-b", 2)).await.unwrap();
    wait_for_checkpoints(&database, "firm-b", &[2]).await;
    assert_eq!(checkpoints(&database, "firm-a").await, vec![3]);

    // firm-a moves again: a checkpoint at its new head, and Verify checks both.
    audit.record(import_events("firm-a", 2)).await.unwrap();
    wait_for_checkpoints(&database, "firm-a", &[3, 5]).await;
    assert_eq!(verified(&audit, "firm-a").await, (5, 2));

    // Nothing moved since: a round signs nothing.
    let config = config(&database, &setup());
    let pool = audit_svc::store::connect(&config.service.database)
        .await
        .unwrap();
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    let signed = checkpoint_moved_heads(&pool, &Signer::from_seed(&seed), Utc::now())
        .await
        .unwrap();
    assert_eq!(signed, 0);
    assert_eq!(checkpoints(&database, "firm-a").await, vec![3, 5]);
    assert_eq!(checkpoints(&database, "firm-b").await, vec![2]);
    pool.close().await;
    audit.stop().await;
}
