//! Leasing access tokens: who may, for which scopes, and what each lease leaves behind.

use std::time::Duration;

use harness::poll_until;
use proto::common::v1::EventKind;
use tonic::Code;

use crate::support::{self, Setup, assert_refused, payload_of};

#[tokio::test]
async fn leases_are_refused_beyond_the_grant_and_the_import_role() {
    let stack = support::start(Setup::default()).await;
    let (_, connection) = stack.app_with_connection("ida@firm").await;
    let id = &connection.connection_id;

    let lease = stack
        .lease(id, &["contacts:read", "matters:read"])
        .await
        .unwrap();
    assert!(!lease.access_token.is_empty());
    let expires = lease.expires_at.unwrap().seconds;
    let token_expires = connection.access_token_expires_at.unwrap().seconds;
    assert!(expires <= token_expires, "a lease never outlives its token");
    // From here on the token is expired for auth-svc: a lease that got past the checks
    // would refresh it first, so refused leases must reach Clio's token endpoint not once.
    stack.advance(Duration::from_secs(31 * 24 * 3_600));

    for (asked, missing) in [
        (vec!["contacts:write"], "contacts:write"),
        (vec!["contacts:read", "activities:read"], "activities:read"),
    ] {
        let refused = stack.lease(id, &asked).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains(missing), "{}", refused.message());
    }
    for caller in ["operator", "connector", "compliance"] {
        let refused = stack
            .lease_as(caller, id, &["contacts:read"], false)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{caller}: {refused:?}"
        );
    }
    let unknown = stack.lease(id, &["nonsense:read"]).await.unwrap_err();
    assert_refused(&unknown, Code::InvalidArgument, "required_scopes[0]");
    let none = stack.lease(id, &[]).await.unwrap_err();
    assert_refused(&none, Code::InvalidArgument, "required_scopes");
    let bad_id = stack
        .lease("not-a-uuid", &["contacts:read"])
        .await
        .unwrap_err();
    assert_refused(&bad_id, Code::InvalidArgument, "connection_id");
    let missing = stack
        .lease(&uuid::Uuid::new_v4().to_string(), &["contacts:read"])
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Refused leases hand out nothing and refreshed nothing, although the token expired.
    assert_eq!(stack.refresh_calls().await, 0);
    stack.lease(id, &["contacts:read"]).await.unwrap();
    assert_eq!(
        stack.refresh_calls().await,
        1,
        "the expired token is refreshed by the first lease allowed"
    );
    stack.stop().await;
}

#[tokio::test]
async fn leases_record_last_use_and_aggregated_usage() {
    let setup = Setup {
        tweak: Box::new(|config| config.leases.usage_flush_ms = 300),
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    let (_, connection) = stack.app_with_connection("jon@firm").await;
    assert!(connection.last_used_at.is_none());

    let leases = (0..20).map(|_| stack.lease(&connection.connection_id, &["contacts:read"]));
    for lease in futures_util::future::join_all(leases).await {
        lease.unwrap();
    }
    let events = poll_until(
        "aggregated usage events",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let events = stack
                .events_about(EventKind::TokenLeased, &connection.connection_id)
                .await;
            let count: u64 = events
                .iter()
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(&e.payload_json).unwrap()
                        ["lease_count"]
                        .as_u64()
                        .unwrap()
                })
                .sum();
            (count == 20).then_some(events)
        },
    )
    .await;
    assert!(
        events.len() <= 3,
        "20 leases are aggregated, not one event each: {} events",
        events.len()
    );
    let payload = payload_of(&events[0]);
    assert_eq!(payload["purposes"], serde_json::json!(["job 42"]));
    assert_eq!(events[0].actor.as_ref().unwrap().id, "import");
    let used = stack.connection(&connection.connection_id).await;
    assert!(
        used.last_used_at.is_some(),
        "last use is recorded for zombie reports"
    );
    stack.stop().await;
}

/// Leases are recorded in groups (one transaction for the leases that arrive together);
/// when that write fails, every lease of the group is refused as UNAVAILABLE (no token
/// leaves unrecorded) and the next leases are written again once the database accepts.
#[tokio::test]
async fn leases_whose_usage_cannot_be_written_are_refused_and_later_ones_succeed() {
    // No flush during the test: the rows stay to be counted.
    let setup = Setup {
        tweak: Box::new(|config| config.leases.usage_flush_ms = 600_000),
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    let (_, connection) = stack.app_with_connection("kim@firm").await;
    let id = connection.connection_id.as_str();
    stack.lease(id, &["contacts:read"]).await.unwrap();

    let mut admin = stack.database.connect().await;
    sqlx::query("ALTER TABLE lease_usage RENAME TO lease_usage_away")
        .execute(&mut admin)
        .await
        .unwrap();
    let refused =
        futures_util::future::join_all((0..10).map(|_| stack.lease(id, &["contacts:read"]))).await;
    for lease in refused {
        let status = lease.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            !status.message().contains("lease_usage"),
            "no SQL detail sent: {status:?}"
        );
    }

    sqlx::query("ALTER TABLE lease_usage_away RENAME TO lease_usage")
        .execute(&mut admin)
        .await
        .unwrap();
    let granted =
        futures_util::future::join_all((0..10).map(|_| stack.lease(id, &["contacts:read"]))).await;
    for lease in granted {
        lease.unwrap();
    }
    let recorded: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(lease_count), 0)::bigint FROM lease_usage")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(
        recorded >= 10,
        "the ten later leases are recorded: {recorded}"
    );
    stack.stop().await;
}

/// A lease of a connection auth-svc leased before is served from what it read then, and
/// only while the connection is still that one: revoked directly in the database (status
/// alone), revoked by another replica, or given new tokens by another replica's refresh,
/// the next lease through this replica is refused, or hands out the new token.
#[tokio::test]
async fn a_remembered_connection_changed_elsewhere_is_read_again_before_it_is_leased() {
    let stack = support::start(Setup::default()).await;
    let replica = stack.replica().await;
    let app = stack.app(support::AppOptions::default()).await;
    let mut ids = Vec::new();
    for user in 1..=3 {
        let connection = stack.connect(&app, "ida@firm", user, None).await;
        ids.push(connection.connection_id);
    }
    let [in_database, by_replica, refreshed] = [&ids[0], &ids[1], &ids[2]];
    let mut before = Vec::new();
    for id in &ids {
        // The first lease reads the connection, the second is served from that read.
        let first = stack.lease_token(id).await;
        assert_eq!(stack.lease_token(id).await, first);
        before.push(first);
    }

    let mut admin = stack.database.connect().await;
    sqlx::query("UPDATE connections SET status = 'revoked' WHERE connection_id = $1::uuid")
        .bind(in_database)
        .execute(&mut admin)
        .await
        .unwrap();
    let refused = stack
        .lease(in_database, &["contacts:read"])
        .await
        .unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "revoked");

    replica.revoke(by_replica).await;
    let refused = stack
        .lease(by_replica, &["contacts:read"])
        .await
        .unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "revoked");
    for id in [in_database, by_replica] {
        let denied = stack.events_about(EventKind::AccessDenied, id).await;
        assert_eq!(denied.len(), 1, "the refusal is audited: {denied:?}");
    }

    let renewed = replica
        .lease_refreshed(refreshed, &["contacts:read"])
        .await
        .unwrap()
        .access_token;
    assert_ne!(
        renewed, before[2],
        "the replica's refresh issued a new token"
    );
    assert_eq!(
        stack.lease_token(refreshed).await,
        renewed,
        "not the token this replica read before the refresh"
    );
    assert_eq!(stack.lease_token(refreshed).await, renewed);
    replica.stop().await;
    stack.stop().await;
}

/// Every lease served from a remembered read is still recorded before its token leaves:
/// the usage rows count each of them.
#[tokio::test]
async fn leases_served_from_a_remembered_read_are_each_recorded() {
    let setup = Setup {
        tweak: Box::new(|config| config.leases.usage_flush_ms = 600_000),
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    let (_, connection) = stack.app_with_connection("lou@firm").await;
    let id = connection.connection_id.as_str();
    let leases = (0..50).map(|_| stack.lease(id, &["contacts:read"]));
    for lease in futures_util::future::join_all(leases).await {
        lease.unwrap();
    }
    for _ in 0..10 {
        stack.lease(id, &["contacts:read"]).await.unwrap();
    }
    let recorded: i64 = stack
        .scalar_about(
            "SELECT coalesce(sum(lease_count), 0)::bigint FROM lease_usage \
             WHERE connection_id = $1::uuid",
            id,
        )
        .await;
    assert_eq!(recorded, 60);
    stack.stop().await;
}
