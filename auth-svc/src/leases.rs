//! Leasing access tokens to import: only for scopes the grant covers, only while the
//! connection is usable, refreshed first when the token is (nearly) expired or the caller
//! says Clio refused it, and never longer than the token itself lives.
//!
//! A lease of a connection this process has read before is served from what it read
//! (`lease_cache`): no read, no decryption, only the usage write every lease makes,
//! which also checks the connection is still as read. Anything else (first lease, a
//! connection changed since, a refused scope, a token near expiry, a forced refresh)
//! reads and checks the connection as before.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use proto::auth::v1 as pb;
use scope_catalog::Scope;
use secrecy::ExposeSecret;
use service_runtime::Caller;

use proto::time::timestamp;

use crate::audit_events::service_actor;
use crate::connections;
use crate::context::Context;
use crate::domain::{ConnectionId, required_text};
use crate::error::AuthError;
use crate::lease_cache::Leasable;
use crate::refresh::{self, Due};
use crate::usage::{LeaseUse, Recorded};
use proto::common::v1::EventKind;

/// A validated `LeaseAccessTokenRequest`.
pub struct LeaseRequest {
    pub connection: ConnectionId,
    pub required: Vec<Scope>,
    pub purpose: String,
    pub force_refresh: bool,
}

impl TryFrom<&pb::LeaseAccessTokenRequest> for LeaseRequest {
    type Error = AuthError;

    fn try_from(request: &pb::LeaseAccessTokenRequest) -> Result<Self, AuthError> {
        if request.required_scopes.is_empty() {
            return Err(AuthError::invalid(
                "required_scopes",
                "name at least one scope",
            ));
        }
        let required = request
            .required_scopes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Scope::from_wire(s, &format!("required_scopes[{i}]"))
                    .map_err(|e| AuthError::invalid(e.field, e.problem))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LeaseRequest {
            connection: ConnectionId::parse("connection_id", &request.connection_id)?,
            required,
            purpose: required_text("purpose", &request.purpose, 500)?,
            force_refresh: request.force_refresh,
        })
    }
}

/// How much life a leased token must have left, else it is refreshed first: the
/// configured minimum, but never more than a quarter of the token's lifetime (with 1-hour
/// or shorter tokens a fixed minute would refresh far too often).
fn lease_min_remaining(ctx: &Context, lifetime_secs: Option<i64>) -> Duration {
    let configured = i64::try_from(ctx.config.refresh.lease_min_remaining_secs).unwrap_or(60);
    let quarter = lifetime_secs.unwrap_or(3_600).max(0) / 4;
    Duration::seconds(configured.min(quarter))
}

/// Reads of the connection one lease makes at most when the connection keeps changing
/// between its read and its usage write (each change is another replica's refresh,
/// reconnect or revocation); then the lease is refused as UNAVAILABLE.
const READS_PER_LEASE: usize = 3;

#[tracing::instrument(skip_all, fields(connection_id = %request.connection, caller = %caller.name, force = request.force_refresh))]
pub async fn lease(
    ctx: &Context,
    caller: &Caller,
    request: LeaseRequest,
) -> Result<pb::LeaseAccessTokenResponse, AuthError> {
    // What this process read of the connection before, if it covers the request: its
    // usage write tells whether the connection is still as read.
    let now = ctx.now();
    if !request.force_refresh
        && let Some(remembered) = ctx.lease_cache.get(request.connection, now)
        && remembered.serves(
            &request.required,
            now + lease_min_remaining(ctx, remembered.token_lifetime_secs),
        )
    {
        match record_use(ctx, caller, &request, &remembered, now).await? {
            Recorded::Written => return Ok(answer(ctx, &remembered, now)),
            Recorded::Stale => ctx.lease_cache.forget(&remembered),
        }
    }
    for _ in 0..READS_PER_LEASE {
        let (leasable, as_stored) = read_leasable(ctx, caller, &request).await?;
        let now = ctx.now();
        match record_use(ctx, caller, &request, &leasable, now).await? {
            Recorded::Written => {
                let leasable = Arc::new(leasable);
                if as_stored {
                    ctx.lease_cache.keep(leasable.clone(), now);
                }
                return Ok(answer(ctx, &leasable, now));
            }
            Recorded::Stale => continue,
        }
    }
    Err(AuthError::Database(sqlx::Error::Protocol(format!(
        "connection {} changed under {READS_PER_LEASE} reads in a row",
        request.connection
    ))))
}

/// Reads the connection and checks it as every lease is checked: usable, the grant
/// covering the request (a refusal is audited), the token refreshed first when due or
/// forced. Whether the token is the one stored when the connection was read (not one a
/// refresh returned since).
async fn read_leasable(
    ctx: &Context,
    caller: &Caller,
    request: &LeaseRequest,
) -> Result<(Leasable, bool), AuthError> {
    let connection = connections::get(ctx, request.connection).await?;
    if let Err(refused) = refresh::require_usable(&connection) {
        return Err(deny(
            ctx,
            caller,
            &connection,
            request,
            "connection_not_usable",
            refused,
        )
        .await);
    }
    if let Some(missing) = connection.granted.first_missing(&request.required) {
        let refused = AuthError::PermissionDenied(format!("grant lacks scope {missing}"));
        return Err(deny(
            ctx,
            caller,
            &connection,
            request,
            "scope_not_granted",
            refused,
        )
        .await);
    }
    let now = ctx.now();
    let fresh = usable_token(ctx, caller, &connection, request.force_refresh, now).await?;
    let as_stored = fresh.token_version == connection.token_version;
    let api_base_url = ctx.clio.api_base_url(connection.region);
    Ok((Leasable::new(&connection, fresh, api_base_url), as_stored))
}

/// Records the lease's use (before the token leaves, so no use goes unreported, even
/// after a crash), if the connection is still as `leasable` read it.
async fn record_use(
    ctx: &Context,
    caller: &Caller,
    request: &LeaseRequest,
    leasable: &Leasable,
    now: DateTime<Utc>,
) -> Result<Recorded, AuthError> {
    let lease = LeaseUse {
        connection: leasable.connection,
        token_version: leasable.token_version,
        caller: &caller.name,
        purpose: &request.purpose,
        at: now,
    };
    ctx.usage.record(&ctx.pool, &lease).await
}

/// The lease handed out: never longer than the token lives, nor than the lease TTL.
fn answer(ctx: &Context, leasable: &Leasable, now: DateTime<Utc>) -> pb::LeaseAccessTokenResponse {
    let ttl = Duration::seconds(i64::try_from(ctx.config.leases.ttl_secs).unwrap_or(300));
    let expires_at = leasable.access_expires_at.min(now + ttl);
    pb::LeaseAccessTokenResponse {
        lease_id: lease_id(),
        access_token: leasable.access_token.expose_secret().to_owned(),
        expires_at: Some(timestamp(expires_at)),
        region: leasable.region as i32,
        api_base_url: leasable.api_base_url.clone(),
        clio_account_id: leasable.clio_account_id.clone(),
        granted_scopes: leasable.granted_wire.clone(),
        app_client_id: leasable.app_client_id.clone(),
    }
}

/// A new lease id: a UUIDv7 (time-ordered) whose random bits come from the thread's
/// generator, not from a system call per id as `Uuid::now_v7` takes them.
fn lease_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random())
        .into_uuid()
        .to_string()
}

/// The connection's access token, refreshed first when the caller says Clio refused it
/// (`force_refresh`) or when too little of its life is left.
async fn usable_token(
    ctx: &Context,
    caller: &Caller,
    connection: &connections::Connection,
    force_refresh: bool,
    now: DateTime<Utc>,
) -> Result<refresh::Fresh, AuthError> {
    let min_remaining = lease_min_remaining(ctx, connection.token_lifetime_secs);
    let actor = service_actor(&caller.name);
    let seen_version = connection.token_version;
    if force_refresh {
        let due = Due::Forced { seen_version };
        return refresh::refresh_if_due(ctx, connection.id, due, actor).await;
    }
    if connection
        .access_expires_at
        .is_none_or(|at| at <= now + min_remaining)
    {
        let due = Due::ExpiresBy {
            by: now + min_remaining,
            seen_version,
        };
        return refresh::refresh_if_due(ctx, connection.id, due, actor).await;
    }
    refresh::current(ctx, connection)
}

/// Records a refused lease as ACCESS_DENIED in the connection's tenant (through the
/// outbox) and returns the refusal. A failure to record it is logged; the caller still
/// gets the refusal.
async fn deny(
    ctx: &Context,
    caller: &Caller,
    connection: &connections::Connection,
    request: &LeaseRequest,
    refused: &str,
    error: AuthError,
) -> AuthError {
    let event = connection
        .event(
            EventKind::AccessDenied,
            service_actor(&caller.name),
            ctx.now(),
        )
        .reason(&error.to_string())
        .payload(serde_json::json!({
            "refused": refused,
            "method": "LeaseAccessToken",
            "purpose": request.purpose,
            "required_scopes": request.required.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
        .build();
    let recorded = async {
        let mut tx = ctx.pool.begin().await?;
        audit_outbox::enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok::<(), AuthError>(())
    }
    .await;
    match recorded {
        Ok(()) => ctx.events_committed(),
        Err(record_error) => {
            tracing::warn!(error = %record_error, "cannot record a refused lease");
        }
    }
    tracing::warn!(refused, reason = %error, "lease refused");
    error
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    #[test]
    fn lease_ids_are_distinct_version_7_uuids() {
        let first = Uuid::parse_str(&super::lease_id()).unwrap();
        let second = Uuid::parse_str(&super::lease_id()).unwrap();
        assert_eq!(first.get_version_num(), 7);
        assert_ne!(first, second);
        assert!(first.get_timestamp().is_some());
    }
}
