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

/// A suggestion of connection `c-1`, approved.
async fn approved(pool: &PgPool, entry: &str) -> Uuid {
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
    let approval = Decision::Approve {
        quantity_secs: 360,
        description: "Call",
    };
    store::decide(pool, row.suggestion_id, "bob@firm", &approval, Utc::now())
        .await
        .unwrap();
    row.suggestion_id
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
