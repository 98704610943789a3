//! Refresh custody under stress: a slow Clio holds up nothing but the leases waiting for
//! it, a crash right after Clio rotated the refresh token loses nothing, and connections
//! whose refresh keeps failing back off instead of taking every proactive pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_svc::config::CrashPoint;
use harness::{poll_until, with_bearer};
use proto::auth::v1 as pb;
use service_runtime::clock::Clock;
use tonic::Code;

use crate::refresh::{HOUR, app_behind, hour_tokens};
use crate::silent_front::SilentFront;
use crate::support::{self, SimRegion, status_of, who_am_i};

/// The 99th percentile of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    samples[rank - 1]
}

#[tokio::test]
async fn a_slow_token_endpoint_holds_up_no_other_rpc() {
    let front = SilentFront::start().await;
    let front_url = front.url();
    let mut setup = hour_tokens(false);
    setup.tweak = Box::new(move |config| {
        // Clio's US host is behind the front; its token endpoint will not answer in time.
        config.clio.regions.set(clio_api::Region::Us, front_url);
        // Clio's 15 s, shortened: the refreshes hang this long, and the test with them.
        config.clio.request_timeout_ms = 5_000;
        config.refresh.attempts = 1;
        // The default pool.
        config.service.database.max_connections = 10;
    });
    let stack = Arc::new(support::start(setup).await);
    front.forward_to(&stack.sim.base_url(SimRegion::Us));
    let app = app_behind(&stack, &front).await;
    let mut expiring = Vec::new();
    for user in 1..=4 {
        expiring.push(
            stack
                .connect(&app, "amy@firm", user, None)
                .await
                .connection_id,
        );
    }
    // Connections at the EU host (not behind the front) to read and revoke meanwhile.
    let eu = stack.eu_app().await;
    let other = stack.connect(&eu, "bob@firm", 1, None).await.connection_id;
    let to_revoke = stack.connect(&eu, "bob@firm", 2, None).await.connection_id;
    stack.advance(2 * HOUR);

    // 200 leases of the four expired tokens, all needing a refresh Clio does not answer.
    front.silence(u32::MAX);
    let leases: Vec<_> = (0..200)
        .map(|i| {
            let (stack, id) = (stack.clone(), expiring[i % expiring.len()].clone());
            tokio::spawn(async move { stack.lease(&id, &["contacts:read"]).await })
        })
        .collect();
    poll_until(
        "one refresh per connection waiting at Clio",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async { (front.silenced() == 4).then_some(()) },
    )
    .await;

    // Meanwhile every other RPC is served at once (150 samples: the p99 allows for two
    // hiccups of a busy machine, not for waiting on the refreshes).
    let mut client = stack.client().await;
    let operator = harness::token_of("operator");
    let mut latencies = Vec::new();
    for i in 0..150 {
        let started = Instant::now();
        match i % 3 {
            0 => {
                client
                    .get_connection(with_bearer(
                        pb::GetConnectionRequest {
                            connection_id: other.clone(),
                        },
                        &operator,
                    ))
                    .await
                    .unwrap();
            }
            1 => {
                client
                    .list_connections(with_bearer(
                        pb::ListConnectionsRequest {
                            principal: "bob@firm".into(),
                            ..Default::default()
                        },
                        &operator,
                    ))
                    .await
                    .unwrap();
            }
            _ => {
                // Even a connection whose refresh is stuck can be read.
                client
                    .get_connection(with_bearer(
                        pb::GetConnectionRequest {
                            connection_id: expiring[i % 4].clone(),
                        },
                        &operator,
                    ))
                    .await
                    .unwrap();
            }
        }
        latencies.push(started.elapsed());
    }
    let started = Instant::now();
    let revoked = stack.revoke(&to_revoke).await;
    latencies.push(started.elapsed());
    assert_eq!(revoked.connection_id, to_revoke);
    assert!(
        leases.iter().all(|lease| !lease.is_finished()),
        "measured while the refreshes were still waiting for Clio"
    );
    let calls = latencies.len();
    let p99 = p99(latencies);
    println!("p99 {p99:?} over {calls} RPCs while 200 leases waited on Clio");
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");

    // The leases fail as unavailable, and only one refresh per connection went to Clio.
    for lease in leases {
        let refused = lease.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    }
    assert_eq!(front.silenced(), 4);
    for id in &expiring {
        assert_eq!(
            status_of(stack.connection(id).await.status),
            pb::ConnectionStatus::Active
        );
    }

    // Clio answers again: the next lease refreshes.
    front.silence(0);
    let lease = stack.lease(&expiring[0], &["contacts:read"]).await.unwrap();
    who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap();
    Arc::into_inner(stack).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_right_after_clio_rotated_the_refresh_token_leaves_a_working_connection() {
    let stack = support::start(hour_tokens(true)).await;
    let (_, connection) = stack.app_with_connection("max@firm").await;
    let id = &connection.connection_id;

    // A second process whose next refresh dies right after Clio answered with a new
    // (rotated) refresh token: the old one is dead at Clio from that moment.
    let crash = CrashPoint::default();
    let armed = crash.clone();
    let doomed = stack
        .killable_replica(move |config| config.refresh.crash_after_store = armed)
        .await;
    crash.arm();
    stack.advance(2 * HOUR);
    let hung =
        tokio::time::timeout(Duration::from_secs(3), doomed.lease(id, &["contacts:read"])).await;
    assert!(
        hung.is_err(),
        "the refresh stopped at the fault point: {hung:?}"
    );
    assert_eq!(stack.refresh_calls().await, 1, "Clio answered");
    doomed.kill();

    // The surviving process leases without reconnecting and without another refresh:
    // what Clio returned was stored before anything else could fail.
    let lease = stack.lease(id, &["contacts:read"]).await.unwrap();
    who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap();
    assert_eq!(stack.refresh_calls().await, 1, "no second refresh needed");

    // And the rotated refresh token is the stored one: the next refresh works too.
    stack.advance(2 * HOUR);
    let lease = stack.lease(id, &["contacts:read"]).await.unwrap();
    who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap();
    assert_eq!(stack.refresh_calls().await, 2);
    assert_eq!(
        status_of(stack.connection(id).await.status),
        pb::ConnectionStatus::Active
    );
    stack.stop().await;
}

/// (failures, seconds until the next attempt) of the failing connections, counted.
async fn failing_backoff(stack: &support::Stack) -> Vec<(i32, i64, i64)> {
    let mut db = stack.database.connect().await;
    let now = stack.clock.now();
    sqlx::query_as(
        "SELECT refresh_failures, \
         round(extract(epoch FROM next_refresh_attempt_at - $1))::bigint AS wait, count(*) \
         FROM connections WHERE principal = 'failing@firm' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(now)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn failing_connections_back_off_and_never_crowd_out_the_rest() {
    let mut setup = hour_tokens(false);
    setup.tweak = Box::new(|config| config.refresh.interval_ms = 100);
    let stack = support::start(setup).await;
    // Ten healthy connections: five Clio users at each of the US and EU hosts.
    let (_, ids) = stack.many_connections("pat@firm", 1, 5).await;
    let mut healthy = Vec::new();
    for id in &ids {
        healthy.push(stack.connection(id).await);
    }
    // 150 connections whose refresh always fails (their tokens were copied from another
    // row, so they do not decrypt where they are), expiring before the healthy ones.
    let mut db = stack.database.connect().await;
    sqlx::query(
        "INSERT INTO connections (connection_id, tenant, app_id, principal, region, clio_user_id, \
         clio_user_name, clio_user_email, clio_account_id, clio_account_name, granted_scopes, \
         granted_scopes_version, status, access_token_ct, access_token_key_id, refresh_token_ct, \
         refresh_token_key_id, access_expires_at, token_lifetime_secs, granted_at) \
         SELECT gen_random_uuid(), tenant, app_id, 'failing@firm', region, 'failing-' || g, \
         clio_user_name, clio_user_email, clio_account_id, clio_account_name, granted_scopes, \
         granted_scopes_version, status, access_token_ct, access_token_key_id, refresh_token_ct, \
         refresh_token_key_id, access_expires_at - interval '10 minutes', token_lifetime_secs, granted_at \
         FROM connections, generate_series(1, 150) g WHERE connection_id = $1::uuid",
    )
    .bind(&healthy[0].connection_id)
    .execute(&mut db)
    .await
    .unwrap();

    // 55 minutes on, all 160 are inside their margin, the failing ones first in line.
    stack.advance(Duration::from_secs(55 * 60));
    poll_until(
        "the ten healthy connections refreshed",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let mut refreshed = 0;
            for connection in &healthy {
                let now = stack.connection(&connection.connection_id).await;
                if now.access_token_expires_at.as_ref().map(|t| t.seconds)
                    > connection
                        .access_token_expires_at
                        .as_ref()
                        .map(|t| t.seconds)
                {
                    refreshed += 1;
                }
            }
            (refreshed == healthy.len()).then_some(())
        },
    )
    .await;
    assert_eq!(stack.refresh_calls().await, 10);
    // Every failing connection was tried once, then left alone for the first backoff.
    poll_until(
        "every failing connection tried once",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            let backoff = failing_backoff(&stack).await;
            (backoff == [(1, 60, 150)]).then_some(())
        },
    )
    .await;

    // After the backoff they are tried again, and the next wait is twice as long.
    stack.advance(Duration::from_secs(61));
    poll_until(
        "every failing connection tried twice",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            let backoff = failing_backoff(&stack).await;
            (backoff == [(2, 120, 150)]).then_some(())
        },
    )
    .await;
    assert_eq!(stack.refresh_calls().await, 10);
    stack.stop().await;
}
