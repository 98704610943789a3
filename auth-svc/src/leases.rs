//! Leasing access tokens to import: only for scopes the grant covers, only while the
//! connection is usable, refreshed first when the token is (nearly) expired or the caller
//! says Clio refused it, and never longer than the token itself lives.

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
use crate::refresh::{self, Due};
use crate::wire_region;
use proto::common::v1::EventKind;

/// A validated `LeaseAccessTokenRequest`.
pub struct LeaseRequest {
    pub connection: ConnectionId,
    pub required: Vec<Scope>,
    pub purpose: String,
    pub force_refresh: bool,
}

impl TryFrom<pb::LeaseAccessTokenRequest> for LeaseRequest {
    type Error = AuthError;

    fn try_from(request: pb::LeaseAccessTokenRequest) -> Result<Self, AuthError> {
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

#[tracing::instrument(skip_all, fields(connection_id = %request.connection, caller = %caller.name, force = request.force_refresh))]
pub async fn lease(
    ctx: &Context,
    caller: &Caller,
    request: LeaseRequest,
) -> Result<pb::LeaseAccessTokenResponse, AuthError> {
    let connection = connections::get(ctx, request.connection).await?;
    if let Err(refused) = refresh::require_usable(&connection) {
        return Err(deny(
            ctx,
            caller,
            &connection,
            &request,
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
            &request,
            "scope_not_granted",
            refused,
        )
        .await);
    }
    let now = ctx.now();
    let fresh = usable_token(ctx, caller, &connection, request.force_refresh, now).await?;
    let ttl = Duration::seconds(i64::try_from(ctx.config.leases.ttl_secs).unwrap_or(300));
    let expires_at = fresh.expires_at.min(now + ttl);
    // Recorded before the token leaves, so no use goes unreported (even after a crash).
    ctx.usage
        .record(&ctx.pool, &connection, &caller.name, &request.purpose, now)
        .await?;
    Ok(pb::LeaseAccessTokenResponse {
        lease_id: uuid::Uuid::now_v7().to_string(),
        access_token: fresh.access_token.expose_secret().to_owned(),
        expires_at: Some(timestamp(expires_at)),
        region: wire_region::to_wire(connection.region) as i32,
        api_base_url: ctx.clio.api_base_url(connection.region),
        clio_account_id: connection.clio_account_id.clone(),
        granted_scopes: connection.granted.to_wire(),
    })
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
