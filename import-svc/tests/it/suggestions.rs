//! The suggestions table on real Postgres: writers racing for one approved suggestion, and
//! a revocation racing a writer.

use chrono::{NaiveDate, Utc};
use harness::TestDatabase;
use import_svc::suggestions::rules::Draft;
use import_svc::suggestions::store::{self, Decision, Origin, Status};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

async fn pool() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    import_svc::MIGRATOR.run(&pool).await.unwrap();
    (database, pool)
}

/// A suggestion of connection `c-1`, pending.
async fn pending(pool: &PgPool, entry: &str) -> Uuid {
    let origin = Origin {
        connection_id: "c-1",
        tenant: "firm-1",
        clio_account_id: "acct-1",
        owner: "bob@firm",
        created_by: "bob@firm",
        at: Utc::now(),
    };
    let draft = Draft {
        calendar_entry_id: entry.into(),
        matter_id: 12,
        user_id: 3,
        date: NaiveDate::from_ymd_opt(2026, 6, 9).unwrap(),
        quantity_secs: 360,
        description: "Call".into(),
    };
    let row = store::insert(pool, &origin, &draft).await.unwrap().unwrap();
    row.suggestion_id
}

const APPROVAL: Decision<'static> = Decision::Approve {
    quantity_secs: 360,
    description: "Call",
};

/// A suggestion of connection `c-1`, approved.
async fn approved(pool: &PgPool, entry: &str) -> Uuid {
    let id = pending(pool, entry).await;
    store::decide(pool, id, "bob@firm", &APPROVAL, Utc::now())
        .await
        .unwrap();
    id
}

/// `ApproveSuggestion` claims the write in the approval's own transaction: the background
/// pass never finds the suggestion approved and unheld, and should the approving replica
/// die before writing, the hold lapses and the pass takes it.
#[tokio::test]
async fn an_approval_holds_its_write_from_its_commit_until_the_hold_lapses() {
    let (_database, pool) = pool().await;
    let id = pending(&pool, "1").await;
    // Long enough that a loaded machine still checks within it (database time, from the
    // approval's transaction start).
    let hold = Duration::from_secs(3);
    let mut tx = pool.begin().await.unwrap();
    store::decide(&mut *tx, id, "bob@firm", &APPROVAL, Utc::now())
        .await
        .unwrap();
    let claimed = store::claim(&mut *tx, id, hold).await.unwrap().unwrap();
    assert_eq!(claimed.status, "approved");
    tx.commit().await.unwrap();
    assert!(store::unwritten(&pool, 10).await.unwrap().is_empty());
    assert!(store::claim(&pool, id, hold).await.unwrap().is_none());

    // The approving replica died: nobody settles the write, and the hold lapses.
    tokio::time::sleep(hold + Duration::from_millis(200)).await;
    assert_eq!(store::unwritten(&pool, 10).await.unwrap(), vec![id]);
    let taken = store::claim(&pool, id, hold).await.unwrap().unwrap();
    assert_eq!(taken.write_attempts, 2);
}

#[tokio::test]
async fn one_writer_of_many_holds_an_approved_suggestion_until_it_lets_go() {
    let (_database, pool) = pool().await;
    let id = approved(&pool, "1").await;
    let hold = Duration::from_secs(60);
    let claims = (0..16).map(|_| store::claim(&pool, id, hold));
    let won = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(Option::is_some)
        .count();
    assert_eq!(won, 1, "exactly one of 16 racing writers holds it");
    assert!(store::claim(&pool, id, hold).await.unwrap().is_none());
    assert!(store::unwritten(&pool, 10).await.unwrap().is_empty());

    // An attempt Clio did not answer lets go until the retry delay has passed.
    store::retry_after(&pool, id, Duration::ZERO, "timed out")
        .await
        .unwrap();
    assert_eq!(store::unwritten(&pool, 10).await.unwrap(), vec![id]);
    let again = store::claim(&pool, id, hold).await.unwrap().unwrap();
    assert_eq!(again.write_attempts, 2);

    // Written: no writer takes it again.
    store::written(&pool, id, 77).await.unwrap().unwrap();
    assert!(
        store::claim(&pool, id, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_revocation_leaves_a_write_in_flight_to_its_writer_and_cancels_the_rest() {
    let (_database, pool) = pool().await;
    let held = approved(&pool, "1").await;
    let waiting = approved(&pool, "2").await;
    store::claim(&pool, held, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let cancelled = store::cancel_open(&pool, "c-1", "connection c-1 is revoked")
        .await
        .unwrap();
    assert_eq!(
        cancelled
            .iter()
            .map(|r| r.suggestion_id)
            .collect::<Vec<_>>(),
        vec![waiting]
    );
    // The writer in flight learns of the revocation from its own lease (and cancels), or
    // finishes a write Clio accepted before it: either way it settles the suggestion.
    let settled = store::end_unwritten(&pool, held, Status::Cancelled, "revoked")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled.status, "cancelled");
    assert!(
        store::claim(&pool, waiting, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
}
