//! Revoking one connection, offboarding a person, revoking an app: Clio is told, the
//! tokens go, the revocation is recorded, and a Clio failure is retried while the
//! connection is already unusable here.

use std::time::Duration;

use clio_sim::Fault;
use harness::{poll_until, with_bearer};
use proto::auth::v1 as pb;
use proto::common::v1::EventKind;
use tonic::Code;

use crate::support::{
    self, AppOptions, Setup, SimRegion, Stack, assert_refused, payload_of, status_of, who_am_i,
};

fn outcome(result: &pb::RevocationResult) -> pb::ClioRevocationOutcome {
    pb::ClioRevocationOutcome::try_from(result.clio_outcome).unwrap()
}

fn deauthorize_down() -> Fault {
    Fault::Status {
        status: 503,
        count: None,
        fraction: None,
        path_prefix: Some("/oauth/deauthorize".into()),
    }
}

/// Token ciphertexts still held for `connection_id`: on the row and awaiting a retry.
async fn held_ciphertexts(stack: &Stack, connection_id: &str) -> (bool, bool) {
    let on_row: bool = stack
        .scalar_about(
            "SELECT access_token_ct IS NOT NULL OR refresh_token_ct IS NOT NULL FROM connections \
             WHERE connection_id = $1::uuid",
            connection_id,
        )
        .await;
    let pending: bool = stack
        .scalar_about(
            "SELECT EXISTS (SELECT 1 FROM pending_deauthorizations WHERE connection_id = $1::uuid)",
            connection_id,
        )
        .await;
    (on_row, pending)
}

async fn wait_until_deauthorized(stack: &Stack, connection_id: &str) {
    poll_until(
        "the deauthorize retry",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            stack.advance(Duration::from_secs(5));
            (held_ciphertexts(stack, connection_id).await == (false, false)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn revoking_a_connection_deauthorizes_at_clio_and_drops_the_tokens() {
    let stack = support::start(Setup::default()).await;
    let (_, connection) = stack.app_with_connection("kim@firm").await;
    let id = &connection.connection_id;
    let token = stack.lease_token(id).await;

    let result = stack.revoke(id).await;
    assert_eq!(outcome(&result), pb::ClioRevocationOutcome::Revoked);
    assert_eq!(stack.deauthorize_calls().await, 1);
    let dead = who_am_i(&stack, SimRegion::Us, &token).await.unwrap_err();
    assert_eq!(dead.kind(), clio_api::ClioErrorKind::InvalidToken);
    assert_eq!(held_ciphertexts(&stack, id).await, (false, false));

    let stored = stack.connection(id).await;
    assert_eq!(status_of(stored.status), pb::ConnectionStatus::Revoked);
    assert_eq!(stored.revoked_by, "operator");
    assert_eq!(stored.revocation_reason, "left the matter team");
    assert!(stored.revoked_at.is_some());
    let refused = stack.lease(id, &["contacts:read"]).await.unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "revoked");

    let events = stack.events_about(EventKind::ConnectionRevoked, id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor.as_ref().unwrap().id, "operator");
    assert_eq!(events[0].reason, "left the matter team");
    assert!(events[0].occurred_at.is_some());
    let payload = payload_of(&events[0]);
    assert_eq!(payload["clio_outcome"], "revoked");

    // Revoking again changes nothing and says so.
    let again = stack.revoke(id).await;
    assert_eq!(outcome(&again), pb::ClioRevocationOutcome::NothingToRevoke);
    assert_eq!(stack.deauthorize_calls().await, 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_revocation_clio_fails_is_local_at_once_and_retried() {
    let stack = support::start(Setup::default()).await;
    let (_, connection) = stack.app_with_connection("lou@firm").await;
    let id = &connection.connection_id;
    let token = stack.lease_token(id).await;
    stack.fault(SimRegion::Us, deauthorize_down()).await;

    let result = stack.revoke(id).await;
    assert_eq!(outcome(&result), pb::ClioRevocationOutcome::FailedRetrying);
    assert!(!result.clio_detail.is_empty());
    // Unusable here at once, although Clio still honours the grant.
    let refused = stack.lease(id, &["contacts:read"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    who_am_i(&stack, SimRegion::Us, &token).await.unwrap();
    assert_eq!(held_ciphertexts(&stack, id).await, (false, true));
    let revoked = stack.events_about(EventKind::ConnectionRevoked, id).await;
    let payload = payload_of(&revoked[0]);
    assert_eq!(payload["clio_outcome"], "failed_retrying");

    // Still failing: the worker retries and keeps the token for the next try.
    stack.advance(Duration::from_secs(5));
    poll_until(
        "a failed retry",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let attempts: i32 = stack
                .scalar_about(
                    "SELECT attempts FROM pending_deauthorizations WHERE connection_id = $1::uuid",
                    id,
                )
                .await;
            (attempts >= 2).then_some(())
        },
    )
    .await;

    stack.sim.admin().clear_faults(SimRegion::Us).await.unwrap();
    wait_until_deauthorized(&stack, id).await;
    let dead = who_am_i(&stack, SimRegion::Us, &token).await.unwrap_err();
    assert_eq!(dead.kind(), clio_api::ClioErrorKind::InvalidToken);
    let retried = stack.events_about(EventKind::RevocationRetried, id).await;
    assert_eq!(retried.len(), 1);
    let payload = payload_of(&retried[0]);
    assert_eq!(payload["clio_outcome"], "revoked");
    stack.stop().await;
}

#[tokio::test]
async fn offboarding_revokes_all_fifty_connections_of_a_person_and_no_one_elses() {
    // How long this takes is measured by `cargo bench -p auth-svc --bench offboard`.
    // A sixth Clio user for the bystander: max holds the first five, and a Clio login
    // belongs to one person.
    let setup = Setup {
        sim: clio_sim::SimConfig {
            dataset: clio_sim::DatasetSize {
                users: 6,
                ..clio_sim::DatasetSize::default()
            },
            ..support::sim_config()
        },
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    // 5 apps in each of two regions, 5 Clio users each: 50 connections of one person.
    let (apps, ids) = stack.many_connections("max@firm", 5, 5).await;
    assert_eq!(ids.len(), 50);
    let bystander = stack.connect(&apps[0], "ned@firm", 6, None).await;

    let response = stack.offboard("max@firm").await;

    assert_eq!(response.results.len(), 50);
    assert!(
        response
            .results
            .iter()
            .all(|r| outcome(r) == pb::ClioRevocationOutcome::Revoked)
    );
    assert_eq!(stack.deauthorize_calls().await, 50);
    for id in &ids {
        let stored = stack.connection(id).await;
        assert_eq!(status_of(stored.status), pb::ConnectionStatus::Revoked);
        assert_eq!(held_ciphertexts(&stack, id).await, (false, false));
    }
    let still = stack.connection(&bystander.connection_id).await;
    assert_eq!(status_of(still.status), pb::ConnectionStatus::Active);

    let offboarded: Vec<_> = stack
        .outbox()
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == EventKind::UserOffboarded)
        .collect();
    assert_eq!(offboarded.len(), 1);
    let payload = payload_of(&offboarded[0].1);
    assert_eq!(payload["connections_revoked"], 50);
    assert_eq!(payload["clio_outcomes"]["revoked"], 50);
    stack.stop().await;
}

#[tokio::test]
async fn offboarding_while_one_region_fails_is_finished_by_retries() {
    let stack = support::start(Setup::default()).await;
    let (_, ids) = stack.many_connections("oli@firm", 1, 2).await;
    stack.fault(SimRegion::Us, deauthorize_down()).await;
    let response = stack.offboard("oli@firm").await;
    let mut outcomes: Vec<_> = response.results.iter().map(outcome).collect();
    outcomes.sort_by_key(|o| *o as i32);
    assert_eq!(
        outcomes,
        vec![
            pb::ClioRevocationOutcome::Revoked,
            pb::ClioRevocationOutcome::Revoked,
            pb::ClioRevocationOutcome::FailedRetrying,
            pb::ClioRevocationOutcome::FailedRetrying,
        ]
    );
    for id in &ids {
        let refused = stack.lease(id, &["contacts:read"]).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
    }
    stack.sim.admin().clear_faults(SimRegion::Us).await.unwrap();
    for id in &ids {
        wait_until_deauthorized(&stack, id).await;
    }
    assert_eq!(stack.deauthorize_calls().await, 4);
    stack.stop().await;
}

#[tokio::test]
async fn revoking_an_app_closes_it_and_revokes_its_connections() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    let other = stack
        .app(AppOptions {
            client_id: "billing-app".into(),
            ..AppOptions::default()
        })
        .await;
    let mut ids = Vec::new();
    for (n, person) in ["pat@firm", "quin@firm", "ray@firm"].iter().enumerate() {
        ids.push(
            stack
                .connect(&app, person, n as i64 + 1, None)
                .await
                .connection_id,
        );
    }
    let untouched = stack.connect(&other, "pat@firm", 1, None).await;
    // Clio fails the first deauthorize only.
    stack
        .fault(
            SimRegion::Us,
            Fault::Status {
                status: 502,
                count: Some(1),
                fraction: None,
                path_prefix: Some("/oauth/deauthorize".into()),
            },
        )
        .await;

    let response = stack
        .client()
        .await
        .revoke_app(with_bearer(
            pb::RevokeAppRequest {
                app_id: app.app_id.clone(),
                reason: "vendor contract ended".into(),
            },
            &harness::token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 3);
    let failed = response
        .results
        .iter()
        .filter(|r| outcome(r) == pb::ClioRevocationOutcome::FailedRetrying)
        .count();
    assert_eq!(failed, 1);
    for id in &ids {
        let stored = stack.connection(id).await;
        assert_eq!(status_of(stored.status), pb::ConnectionStatus::Revoked);
        wait_until_deauthorized(&stack, id).await;
    }
    let refused = stack
        .start_authorization(
            &app.app_id,
            "sam@firm",
            pb::AuthorizationMode::OutOfBand,
            None,
        )
        .await
        .unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "revoked");
    stack
        .lease(&untouched.connection_id, &["contacts:read"])
        .await
        .unwrap();
    assert!(
        stack
            .outbox()
            .await
            .iter()
            .any(|(kind, _)| *kind == EventKind::AppRevoked)
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_retried_deauthorize_uses_the_tokens_a_rotating_refresh_issued() {
    const HOUR: Duration = Duration::from_secs(3_600);
    // 1-hour access tokens, and every refresh replaces the refresh token.
    let stack = support::start(Setup {
        sim: clio_sim::SimConfig {
            access_token_ttl: HOUR,
            rotate_refresh_tokens: true,
            ..support::sim_config()
        },
        ..Setup::default()
    })
    .await;
    let (app, connection) = stack.app_with_connection("uma@firm").await;
    let id = &connection.connection_id;
    // The access token is expired for auth-svc and for Clio alike, so revoking must first
    // refresh, and Clio answers that refresh with a new refresh token.
    stack.advance(2 * HOUR);
    stack.sim.admin().advance_clock(2 * HOUR).await.unwrap();
    stack.fault(SimRegion::Us, deauthorize_down()).await;

    let result = stack.revoke(id).await;
    assert_eq!(outcome(&result), pb::ClioRevocationOutcome::FailedRetrying);
    assert_eq!(stack.refresh_calls().await, 1);

    stack.sim.admin().clear_faults(SimRegion::Us).await.unwrap();
    wait_until_deauthorized(&stack, id).await;
    let retried = stack.events_about(EventKind::RevocationRetried, id).await;
    assert_eq!(retried.len(), 1);
    let payload = payload_of(&retried[0]);
    assert_eq!(payload["clio_outcome"], "revoked", "{payload}");
    // Nothing of the grant is left live at Clio for an admin to revoke.
    let still_live = stack
        .sim
        .admin()
        .revoke_grants_of(SimRegion::Us, &app.client_id, 1)
        .await
        .unwrap();
    assert_eq!(still_live, 0, "the grant is still live at Clio");
    stack.stop().await;
}

#[tokio::test]
async fn a_partial_offboarding_is_recorded_with_each_connections_outcome() {
    let stack = support::start(Setup::default()).await;
    let (_, ids) = stack.many_connections("pat@firm", 1, 3).await;
    // One connection's access token no key opens any more (another row's ciphertext, bound
    // elsewhere): its revocation cannot be done here.
    let broken = ids[0].clone();
    let mut db = stack.database.connect().await;
    sqlx::query(
        "UPDATE connections SET access_token_ct = (SELECT access_token_ct FROM connections \
         WHERE connection_id = $2::uuid), refresh_token_ct = (SELECT refresh_token_ct \
         FROM connections WHERE connection_id = $2::uuid) WHERE connection_id = $1::uuid",
    )
    .bind(&broken)
    .bind(&ids[1])
    .execute(&mut db)
    .await
    .unwrap();

    let response = stack.offboard("pat@firm").await;
    assert_eq!(
        response.results.len(),
        ids.len() - 1,
        "the others are revoked"
    );
    assert_eq!(response.failures.len(), 1, "{:?}", response.failures);
    assert_eq!(response.failures[0].connection_id, broken);

    let offboarded: Vec<_> = stack
        .outbox()
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == EventKind::UserOffboarded)
        .collect();
    assert_eq!(offboarded.len(), 1, "a partial run is recorded too");
    let payload = payload_of(&offboarded[0].1);
    assert_eq!(payload["partial"], true);
    assert_eq!(payload["clio_outcomes"]["error"], 1);
    let connections = payload["connections"].as_array().unwrap();
    assert_eq!(
        connections.len(),
        ids.len(),
        "every connection's outcome: {payload}"
    );
    let failed = connections
        .iter()
        .find(|c| c["connection_id"] == broken.as_str())
        .expect("the failed connection is listed");
    assert_eq!(failed["clio_outcome"], "error");
    stack.stop().await;
}
