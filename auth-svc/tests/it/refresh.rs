//! Refreshing access tokens: before expiry, on demand, once per connection however many
//! leases ask, with and without refresh-token rotation, and what Clio's failures do.

use std::sync::Arc;
use std::time::Duration;

use clio_sim::Fault;
use harness::poll_until;
use proto::auth::v1 as pb;
use proto::common::v1::EventKind;
use tonic::Code;

use crate::silent_front::SilentFront;
use crate::support::{
    self, AppOptions, Setup, SimRegion, Stack, TestApp, assert_refused, payload_of, sim_config,
    status_of, who_am_i,
};

pub(crate) const HOUR: Duration = Duration::from_secs(3_600);

/// A simulator issuing 1-hour access tokens (Clio documents 30 days; some accounts see 1 h).
pub(crate) fn hour_tokens(rotate: bool) -> Setup {
    Setup {
        sim: clio_sim::SimConfig {
            access_token_ttl: HOUR,
            rotate_refresh_tokens: rotate,
            ..sim_config()
        },
        ..Setup::default()
    }
}

async fn refresh_token_ct(stack: &Stack, connection_id: &str) -> Option<Vec<u8>> {
    stack
        .scalar_about(
            "SELECT refresh_token_ct FROM connections WHERE connection_id = $1::uuid",
            connection_id,
        )
        .await
}

/// Lets the access token expire twice, each time leasing a refreshed one that Clio accepts.
async fn refresh_twice(stack: &Stack, connection_id: &str) {
    for round in 1..=2 {
        stack.advance(2 * HOUR);
        let lease = stack
            .lease(connection_id, &["contacts:read"])
            .await
            .unwrap_or_else(|e| panic!("refresh {round}: {e:?}"));
        who_am_i(stack, SimRegion::Us, &lease.access_token)
            .await
            .unwrap();
    }
}

/// The payloads of the TokenRefreshed events about a connection, oldest first.
async fn refreshed_payloads(stack: &Stack, connection_id: &str) -> Vec<serde_json::Value> {
    stack
        .events_about(EventKind::TokenRefreshed, connection_id)
        .await
        .iter()
        .map(payload_of)
        .collect()
}

fn seconds(timestamp: &Option<prost_types::Timestamp>) -> i64 {
    timestamp.as_ref().unwrap().seconds
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let mut setup = hour_tokens(false);
    setup.tweak = Box::new(|config| config.refresh.interval_ms = 50);
    let stack = support::start(setup).await;
    let (_, connection) = stack.app_with_connection("ann@firm").await;
    // expires_in is honoured: one hour, not Clio's documented 30 days.
    let granted = seconds(&connection.granted_at);
    let expires = seconds(&connection.access_token_expires_at);
    assert!(
        (expires - granted - 3_600).abs() <= 1,
        "{}",
        expires - granted
    );
    assert_eq!(stack.refresh_calls().await, 0);

    // 55 minutes later the token is inside its refresh margin (10% of its life).
    stack.advance(Duration::from_secs(55 * 60));
    poll_until(
        "a proactive refresh",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let c = stack.connection(&connection.connection_id).await;
            (seconds(&c.access_token_expires_at) > expires).then_some(())
        },
    )
    .await;
    assert_eq!(stack.refresh_calls().await, 1);
    let refreshed = stack
        .events_about(EventKind::TokenRefreshed, &connection.connection_id)
        .await;
    assert_eq!(refreshed.len(), 1);
    let payload = payload_of(&refreshed[0]);
    assert_eq!(payload["trigger"], "proactive");
    assert_eq!(payload["expires_in_secs"], 3_600);
    // The refreshed token is the one leased, and Clio accepts it.
    let lease = stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap();
    assert_eq!(stack.refresh_calls().await, 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_hundred_leases_of_an_expired_token_make_one_refresh_call() {
    let stack = Arc::new(support::start(hour_tokens(false)).await);
    let (_, connection) = stack.app_with_connection("ben@firm").await;
    let before = stack.lease_token(&connection.connection_id).await;
    stack.advance(2 * HOUR);

    let leases = (0..100).map(|_| {
        let stack = stack.clone();
        let id = connection.connection_id.clone();
        tokio::spawn(async move { stack.lease(&id, &["contacts:read"]).await })
    });
    let mut tokens = std::collections::HashSet::new();
    for lease in leases {
        tokens.insert(lease.await.unwrap().unwrap().access_token);
    }
    assert_eq!(tokens.len(), 1, "every lease got the one refreshed token");
    assert!(!tokens.contains(&before));
    // Exactly one call reached Clio's token endpoint: one success and no refused attempt.
    let calls = stack.sim.admin().calls().await.unwrap().token;
    assert_eq!((calls.refresh_token, calls.errors), (1, 0));
    let refreshed = stack
        .events_about(EventKind::TokenRefreshed, &connection.connection_id)
        .await;
    assert_eq!(refreshed.len(), 1);
    let payload = payload_of(&refreshed[0]);
    assert_eq!(payload["trigger"], "lease");
    let token = tokens.into_iter().next().unwrap();
    who_am_i(&stack, SimRegion::Us, &token).await.unwrap();
    Arc::into_inner(stack).unwrap().stop().await;
}

#[tokio::test]
async fn two_replicas_share_one_refresh_of_an_expired_token() {
    let stack = Arc::new(support::start(hour_tokens(false)).await);
    // Up before the token expires: neither replica has a head start on the refresh.
    let replica = Arc::new(stack.replica().await);
    let (_, connection) = stack.app_with_connection("hal@firm").await;
    let id = connection.connection_id.clone();
    let before = replica.lease(&id, &["contacts:read"]).await.unwrap();
    stack.advance(2 * HOUR);

    // 50 leases through each replica, interleaved, all in flight together.
    let leases: Vec<_> = (0..100)
        .map(|i| {
            let (stack, replica, id) = (stack.clone(), replica.clone(), id.clone());
            tokio::spawn(async move {
                let lease = if i % 2 == 0 {
                    stack.lease(&id, &["contacts:read"]).await
                } else {
                    replica.lease(&id, &["contacts:read"]).await
                };
                (i % 2, lease.map(|l| l.access_token))
            })
        })
        .collect();
    let mut tokens_by_replica = [Vec::new(), Vec::new()];
    for lease in leases {
        let (replica, token) = lease.await.unwrap();
        tokens_by_replica[replica].push(token.unwrap());
    }
    let [first, second] = tokens_by_replica;
    assert_eq!((first.len(), second.len()), (50, 50));
    let token = first[0].clone();
    assert_ne!(
        token, before.access_token,
        "the expired token was refreshed"
    );
    assert!(
        first.iter().chain(&second).all(|t| *t == token),
        "both replicas leased the one refreshed token"
    );
    // One successful call to Clio's token endpoint between the two replicas, none refused.
    let calls = stack.sim.admin().calls().await.unwrap().token;
    assert_eq!((calls.refresh_token, calls.errors), (1, 0));
    assert_eq!(
        stack
            .events_about(EventKind::TokenRefreshed, &id)
            .await
            .len(),
        1
    );
    who_am_i(&stack, SimRegion::Us, &token).await.unwrap();
    Arc::into_inner(replica).unwrap().stop().await;
    Arc::into_inner(stack).unwrap().stop().await;
}

#[tokio::test]
async fn a_token_clio_refuses_is_refreshed_when_the_lease_says_so() {
    let stack = support::start(hour_tokens(false)).await;
    let (_, connection) = stack.app_with_connection("cat@firm").await;
    let old = stack.lease_token(&connection.connection_id).await;
    // Clio's clock runs ahead of auth-svc's: the token is dead there, alive here.
    stack.sim.admin().advance_clock(2 * HOUR).await.unwrap();
    let refused = who_am_i(&stack, SimRegion::Us, &old).await.unwrap_err();
    assert_eq!(refused.kind(), clio_api::ClioErrorKind::InvalidToken);
    let same = stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    assert_eq!(same.access_token, old, "no refresh without a reason");
    let forced = stack
        .lease_as(
            "import",
            &connection.connection_id,
            &["contacts:read"],
            true,
        )
        .await
        .unwrap();
    assert_ne!(forced.access_token, old);
    who_am_i(&stack, SimRegion::Us, &forced.access_token)
        .await
        .unwrap();
    assert_eq!(stack.refresh_calls().await, 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_and_used_next_time() {
    let stack = support::start(hour_tokens(true)).await;
    let (_, connection) = stack.app_with_connection("dot@firm").await;
    let original = refresh_token_ct(&stack, &connection.connection_id).await;
    refresh_twice(&stack, &connection.connection_id).await;
    assert_ne!(
        refresh_token_ct(&stack, &connection.connection_id).await,
        original
    );
    assert_eq!(stack.refresh_calls().await, 2);
    let payloads = refreshed_payloads(&stack, &connection.connection_id).await;
    assert_eq!(payloads[1]["refresh_token_rotated"], true);
    stack.stop().await;
}

#[tokio::test]
async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let stack = support::start(hour_tokens(false)).await;
    let (_, connection) = stack.app_with_connection("eve@firm").await;
    let original = refresh_token_ct(&stack, &connection.connection_id).await;
    assert!(original.is_some());
    refresh_twice(&stack, &connection.connection_id).await;
    // Not even re-encrypted: the stored ciphertext is the very same.
    assert_eq!(
        refresh_token_ct(&stack, &connection.connection_id).await,
        original
    );
    assert_eq!(stack.refresh_calls().await, 2);
    let payloads = refreshed_payloads(&stack, &connection.connection_id).await;
    assert_eq!(payloads[0]["refresh_token_rotated"], false);
    stack.stop().await;
}

#[tokio::test]
async fn invalid_grant_marks_the_connection_for_reconnecting() {
    let stack = support::start(hour_tokens(false)).await;
    let (app, connection) = stack.app_with_connection("fin@firm").await;
    let revoked = stack
        .sim
        .admin()
        .revoke_grants_of(SimRegion::Us, &app.client_id, 1)
        .await
        .unwrap();
    assert!(revoked >= 1);
    stack.advance(2 * HOUR);
    let refused = stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "reconnect");
    let stored = stack.connection(&connection.connection_id).await;
    assert_eq!(
        status_of(stored.status),
        pb::ConnectionStatus::NeedsReconnect
    );
    assert_eq!(
        refresh_token_ct(&stack, &connection.connection_id).await,
        None
    );
    let events = stack
        .events_about(
            EventKind::ConnectionNeedsReconnect,
            &connection.connection_id,
        )
        .await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0].reason.contains("invalid_grant"),
        "{}",
        events[0].reason
    );

    // Later leases are refused without asking Clio again.
    let again = stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let calls = stack.sim.admin().calls().await.unwrap().token;
    assert_eq!(
        (calls.refresh_token, calls.errors),
        (0, 1),
        "one refused refresh"
    );

    // Reconnecting makes the same connection usable again.
    let back = stack
        .connect(&app, "fin@firm", 1, Some(&connection.connection_id))
        .await;
    assert_eq!(status_of(back.status), pb::ConnectionStatus::Active);
    stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    stack.stop().await;
}

#[tokio::test]
async fn transient_refresh_failures_are_retried_and_never_mark_the_connection() {
    let stack = support::start(hour_tokens(false)).await;
    let (_, connection) = stack.app_with_connection("gil@firm").await;
    let admin = stack.sim.admin();
    let token_fault = |count: Option<u32>| Fault::Status {
        status: 503,
        count,
        fraction: None,
        path_prefix: Some("/oauth/token".into()),
    };

    // Two failures, then success: the lease rides through the retries.
    admin
        .inject(SimRegion::Us, token_fault(Some(2)))
        .await
        .unwrap();
    stack.advance(2 * HOUR);
    stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();

    // Clio down for good: the lease fails as unavailable, the connection stays active.
    admin
        .inject(SimRegion::Us, token_fault(None))
        .await
        .unwrap();
    stack.advance(2 * HOUR);
    let refused = stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let stored = stack.connection(&connection.connection_id).await;
    assert_eq!(status_of(stored.status), pb::ConnectionStatus::Active);
    assert!(
        stack
            .events_about(
                EventKind::ConnectionNeedsReconnect,
                &connection.connection_id
            )
            .await
            .is_empty()
    );

    admin.clear_faults(SimRegion::Us).await.unwrap();
    stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    stack.stop().await;
}

/// The default app, registered with the approval URI of Clio as auth-svc sees it: behind
/// `front`.
pub(crate) async fn app_behind(stack: &Stack, front: &SilentFront) -> TestApp {
    let options = AppOptions::default();
    let client_secret = "client-secret-behind-the-front".to_owned();
    let redirect_uris = vec![
        stack.callback_uri(),
        format!("{}/oauth/approval", front.url()),
    ];
    stack
        .sim
        .admin()
        .register_app(
            SimRegion::Us,
            &clio_sim::AppSpec {
                client_id: options.client_id.clone(),
                client_secret: client_secret.clone(),
                redirect_uris: redirect_uris.clone(),
                permissions: options.scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
        )
        .await
        .unwrap();
    let app_id = stack
        .register_at_auth(&options, &client_secret, redirect_uris)
        .await;
    TestApp {
        app_id,
        client_id: options.client_id,
        client_secret,
    }
}

#[tokio::test]
async fn refreshes_clio_does_not_answer_in_time_are_retried_and_never_mark_the_connection() {
    let front = SilentFront::start().await;
    let front_url = front.url();
    let mut setup = hour_tokens(false);
    setup.tweak = Box::new(move |config| {
        config.clio.regions.set(clio_api::Region::Us, front_url);
        config.clio.request_timeout_ms = 250;
        config.refresh.attempts = 4;
    });
    let stack = support::start(setup).await;
    front.forward_to(&stack.sim.base_url(SimRegion::Us));
    let app = app_behind(&stack, &front).await;
    let connection = stack.connect(&app, "ivy@firm", 1, None).await;
    let id = &connection.connection_id;
    let before = stack.lease_token(id).await;

    // Clio takes the next two refresh calls and never answers; the third gets through.
    front.silence(2);
    stack.advance(2 * HOUR);
    let lease = stack.lease(id, &["contacts:read"]).await.unwrap();
    assert_ne!(
        lease.access_token, before,
        "the expired token was refreshed"
    );
    who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap();
    assert_eq!(front.silenced(), 2, "two attempts timed out");
    assert_eq!(stack.refresh_calls().await, 1, "one attempt reached Clio");

    // Clio silent for good: the lease fails as unavailable, the connection stays active.
    front.silence(u32::MAX);
    stack.advance(2 * HOUR);
    let refused = stack.lease(id, &["contacts:read"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(front.silenced(), 2 + 4, "every attempt timed out");
    let stored = stack.connection(id).await;
    assert_eq!(status_of(stored.status), pb::ConnectionStatus::Active);
    assert!(
        stack
            .events_about(EventKind::ConnectionNeedsReconnect, id)
            .await
            .is_empty()
    );

    front.silence(0);
    stack.lease(id, &["contacts:read"]).await.unwrap();
    assert_eq!(stack.refresh_calls().await, 2);
    stack.stop().await;
}

#[tokio::test]
async fn a_thirty_day_token_is_refreshed_within_the_max_margin_not_at_half_life() {
    // Clio's 30-day tokens (the simulator's default): 10% of the life would be 3 days, the
    // configured cap of one hour is what applies.
    let setup = Setup {
        tweak: Box::new(|config| config.refresh.interval_ms = 50),
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    let app = stack.app(AppOptions::default()).await;
    let early = stack.connect(&app, "kit@firm", 1, None).await;
    stack.advance(2 * HOUR);
    let late = stack.connect(&app, "kit@firm", 2, None).await;
    let late_expires = seconds(&late.access_token_expires_at);
    let early_expires = seconds(&early.access_token_expires_at);
    assert_eq!(late_expires - seconds(&late.granted_at), 30 * 24 * 3_600);

    // Half an hour before the early token expires: it is inside the one-hour margin, the
    // late one (2.5 hours left, long past half-life and inside 10% of its life) is not. One
    // pass judges both at the same time.
    stack.advance(Duration::from_secs(30 * 24 * 3_600) - 2 * HOUR - HOUR / 2);
    poll_until(
        "the early token refreshed",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let c = stack.connection(&early.connection_id).await;
            (seconds(&c.access_token_expires_at) > early_expires).then_some(())
        },
    )
    .await;
    let refreshed = stack
        .events_about(EventKind::TokenRefreshed, &early.connection_id)
        .await;
    assert_eq!(refreshed.len(), 1);
    assert!(seconds(&refreshed[0].occurred_at) >= early_expires - 3_600);
    let late_now = stack.connection(&late.connection_id).await;
    assert_eq!(seconds(&late_now.access_token_expires_at), late_expires);
    assert_eq!(stack.refresh_calls().await, 1);
    stack.stop().await;
}

#[tokio::test]
async fn an_eu_connection_is_refreshed_at_the_eu_host() {
    let stack = support::start(hour_tokens(false)).await;
    let eu = stack.eu_app().await;
    let connection = stack.connect(&eu, "lin@firm", 1, None).await;
    let before = stack.lease_token(&connection.connection_id).await;
    stack.advance(2 * HOUR);
    // Only the EU host knows this refresh token: a refresh sent to the US host would be
    // refused and mark the connection for reconnecting.
    let after = stack.lease_token(&connection.connection_id).await;
    assert_ne!(after, before);
    assert_eq!(stack.refresh_calls().await, 1);
    assert_eq!(
        status_of(stack.connection(&connection.connection_id).await.status),
        pb::ConnectionStatus::Active
    );
    who_am_i(&stack, SimRegion::Eu, &after).await.unwrap();
    let calls = stack.sim.admin().calls().await.unwrap();
    let us_calls: u64 = calls
        .api
        .iter()
        .filter(|c| c.region == SimRegion::Us)
        .map(|c| c.count)
        .sum();
    assert_eq!(
        us_calls, 0,
        "nothing of the EU connection went to the US host"
    );
    stack.stop().await;
}
