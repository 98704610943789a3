//! Refreshing access tokens: one refresh per connection at a time across all replicas,
//! without holding a row lock or a pooled connection while Clio answers.
//!
//! A refresh *claims* the connection in Postgres (`refresh_claim`, valid until
//! `refresh_claimed_until` on the database's clock, long enough for every attempt), then
//! calls Clio with no transaction open, then writes the new tokens in their own commit the
//! moment Clio returns them (which also releases the claim). Whoever finds the refresh
//! claimed by someone else polls the row until the token changes and uses the new one, so
//! a crowd of leases of an expired token makes one call to Clio. Inside one process the
//! leases of one connection queue on an in-memory single flight first, so only one of
//! them polls Postgres. A claim left by a crashed replica expires on its own.
//!
//! `invalid_grant` means the grant is gone (revoked at Clio): the connection needs the
//! person to reconnect and its dead tokens are dropped. Transient failures are retried a
//! bounded number of times and leave the connection as it was, apart from a persisted,
//! exponentially growing time before the proactive refresher tries it again.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use clio_api::{AppCredentials, ClioError, Region, TokenGrant};
use proto::common::v1::{Actor, AuditEvent, EventKind};
use secrecy::SecretString;
use service_runtime::backoff::doubling;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit_events::system_actor;
use crate::connect::clio_failure;
use crate::connections::{self, Connection};
use crate::context::Context;
use crate::domain::{ConnectionId, ConnectionStatus};
use crate::error::AuthError;
use crate::store;
use crate::store::connections::refresh::{
    DueForRefresh, RefreshClaim, RefreshFailure, RefreshedTokens,
};
use crate::store::connections::{access_binding, refresh_binding};

mod flights;
pub use flights::RefreshFlights;

/// Longest wait between attempts, whatever Clio's Retry-After says.
const MAX_RETRY_WAIT: StdDuration = StdDuration::from_secs(5);
/// How often a refresh claimed by another replica is looked at again.
const CLAIM_POLL: StdDuration = StdDuration::from_millis(50);
/// Attempts at writing tokens Clio returned when the database fails transiently: a
/// rotated refresh token that is not written is lost, and with it the connection.
const STORE_ATTEMPTS: u32 = 5;

/// When a refresh is needed, decided again once the refresh is claimed.
#[derive(Debug, Clone, Copy)]
pub enum Due {
    /// The token expires at or before `by` (a lease needs some time left), unless the
    /// token changed since `seen_version`: a lease that waited for another refresh uses
    /// the token it produced, even when Clio hands out tokens shorter-lived than `by`.
    ExpiresBy {
        by: DateTime<Utc>,
        seen_version: i64,
    },
    /// Within the proactive margin of its lifetime.
    WithinMargin,
    /// Asked for (after Clio answered 401), unless the token changed since `seen_version`.
    Forced { seen_version: i64 },
}

impl Due {
    fn as_str(self) -> &'static str {
        match self {
            Due::ExpiresBy { .. } => "lease",
            Due::WithinMargin => "proactive",
            Due::Forced { .. } => "forced",
        }
    }

    /// Whether `connection` (as just read) still needs refreshing.
    fn needed(self, ctx: &Context, connection: &Connection) -> bool {
        let now = ctx.now();
        let expires_at = connection.access_expires_at.unwrap_or(now);
        match self {
            Due::ExpiresBy { by, seen_version } => {
                (connection.token_version == seen_version && expires_at <= by) || expires_at <= now
            }
            Due::WithinMargin => expires_at - margin(ctx, connection.token_lifetime_secs) <= now,
            Due::Forced { seen_version } => connection.token_version == seen_version,
        }
    }
}

/// A usable access token.
pub struct Fresh {
    pub access_token: SecretString,
    pub expires_at: DateTime<Utc>,
    /// The connection's `token_version` that stores this token: a lease records its use
    /// only while the row still has it (see `store::lease_usage`).
    pub token_version: i64,
}

/// The proactive margin: a share of the token's lifetime, capped.
pub fn margin(ctx: &Context, lifetime_secs: Option<i64>) -> Duration {
    let lifetime = lifetime_secs.unwrap_or(3_600).max(0) as f64;
    let secs =
        (lifetime * ctx.config.refresh.margin_ratio).min(ctx.config.refresh.max_margin_secs as f64);
    Duration::seconds(secs as i64)
}

/// Usable only while active.
pub fn require_usable(connection: &Connection) -> Result<(), AuthError> {
    match connection.status {
        ConnectionStatus::Active => Ok(()),
        ConnectionStatus::NeedsReconnect => Err(AuthError::FailedPrecondition(format!(
            "connection {} needs the person to reconnect",
            connection.id
        ))),
        ConnectionStatus::Revoked => Err(AuthError::FailedPrecondition(format!(
            "connection {} is revoked",
            connection.id
        ))),
    }
}

/// The decrypted access token of a loaded connection.
pub fn current(ctx: &Context, connection: &Connection) -> Result<Fresh, AuthError> {
    let (Some(ct), Some(expires_at)) = (&connection.access_token_ct, connection.access_expires_at)
    else {
        return Err(AuthError::FailedPrecondition(format!(
            "connection {} holds no token",
            connection.id
        )));
    };
    Ok(Fresh {
        access_token: ctx.vault.open(ct, &access_binding(connection.id))?,
        expires_at,
        token_version: connection.token_version,
    })
}

/// How long a claim holds: every attempt's connect and request timeouts and the waits
/// between them, with room to write the answer. A replica that dies mid-refresh blocks
/// the connection's refresh for at most this long.
fn claim_hold_secs(ctx: &Context) -> f64 {
    let clio = &ctx.config.clio;
    let per_attempt = StdDuration::from_millis(clio.connect_timeout_ms + clio.request_timeout_ms)
        + MAX_RETRY_WAIT;
    (per_attempt * ctx.config.refresh.attempts.max(1)).as_secs_f64() + 10.0
}

/// Refreshes `id` if still `due` once the refresh is claimed; returns the usable token.
#[tracing::instrument(skip_all, fields(connection_id = %id, trigger = due.as_str()))]
pub async fn refresh_if_due(
    ctx: &Context,
    id: ConnectionId,
    due: Due,
    actor: Actor,
) -> Result<Fresh, AuthError> {
    let mut flight = ctx.refreshes.enter(id).await;
    if let Some(error) = flight.failure_while_queued() {
        return Err(error);
    }
    let claim = Uuid::now_v7();
    let connection = loop {
        let connection = connections::get(ctx, id).await?;
        require_usable(&connection)?;
        if !due.needed(ctx, &connection) {
            // Someone refreshed while we waited.
            return current(ctx, &connection);
        }
        if try_claim(ctx, &connection, claim).await? {
            break connection;
        }
        // Another replica is refreshing it (or the token just changed): look again soon,
        // holding nothing meanwhile.
        tokio::time::sleep(CLAIM_POLL).await;
    };
    let error = match refresh_claimed(ctx, &connection, claim, due, actor).await {
        Ok(fresh) => return Ok(fresh),
        Err(Failed::ClaimSettled(error)) => error,
        Err(Failed::ClaimHeld(error)) => {
            if let Err(release) = release_after_failure(ctx, &connection, claim, &error).await {
                tracing::warn!(error = %release, "cannot release the refresh claim; it expires on its own");
            }
            error
        }
    };
    flight.record(&error);
    Err(error)
}

/// Takes the refresh of `connection` if nobody holds it and the token is still the one
/// read.
async fn try_claim(ctx: &Context, connection: &Connection, claim: Uuid) -> Result<bool, AuthError> {
    let claim = RefreshClaim {
        connection: connection.id,
        claim,
        hold_secs: claim_hold_secs(ctx),
        token_version: connection.token_version,
    };
    store::connections::refresh::claim(&ctx.pool, &claim).await
}

/// How a claimed refresh failed: with the claim still ours to release (and the failure
/// to count), or already settled (written, dropped with the grant, or "crashed").
enum Failed {
    ClaimHeld(AuthError),
    ClaimSettled(AuthError),
}

impl From<AuthError> for Failed {
    fn from(error: AuthError) -> Self {
        Failed::ClaimHeld(error)
    }
}

/// The refresh once claimed: nothing is held while Clio answers.
async fn refresh_claimed(
    ctx: &Context,
    connection: &Connection,
    claim: Uuid,
    due: Due,
    actor: Actor,
) -> Result<Fresh, Failed> {
    let id = connection.id;
    let app = store::apps::load(&ctx.pool, connection.app_id).await?;
    let credentials = app.credentials(&ctx.vault)?;
    let refresh_ct = connection.refresh_token_ct.as_deref().ok_or_else(|| {
        AuthError::Internal(format!("active connection {id} has no refresh token"))
    })?;
    let refresh_token = ctx
        .vault
        .open(refresh_ct, &refresh_binding(id))
        .map_err(AuthError::from)?;
    let outcome = refresh_at_clio(ctx, connection.region, &credentials, &refresh_token).await;
    let grant = match ctx.metrics.refreshed(due.as_str(), outcome) {
        Ok(grant) => grant,
        Err(ClioError::InvalidGrant { description }) => {
            mark_needs_reconnect(ctx, connection, claim, &description, actor).await?;
            return Err(Failed::ClaimSettled(AuthError::FailedPrecondition(
                format!(
                    "connection {id} needs the person to reconnect: Clio refused the refresh token (invalid_grant)"
                ),
            )));
        }
        Err(error) => {
            if matches!(error, ClioError::InvalidClient { .. }) {
                tracing::error!(%error, app_id = %connection.app_id, "Clio refused the app's client credentials on refresh");
            }
            return Err(Failed::ClaimHeld(clio_failure("token refresh", error)));
        }
    };

    // Clio has answered: if it rotated the refresh token, the stored one is dead from now
    // on, so the new tokens are written before anything else can fail.
    let fresh = store_tokens(ctx, connection, claim, &grant, due, actor).await?;
    if ctx.config.refresh.crash_after_store.fire() {
        // The process dies here (the test kills it): nothing after the store ever runs.
        std::future::pending::<()>().await;
    }
    ctx.events_committed();
    Ok(fresh)
}

/// Clio's refresh, tried again while it fails transiently (up to `refresh.attempts` in
/// all), waiting what Clio's Retry-After or the doubling backoff says, at most
/// [`MAX_RETRY_WAIT`].
async fn refresh_at_clio(
    ctx: &Context,
    region: Region,
    credentials: &AppCredentials,
    refresh_token: &SecretString,
) -> Result<TokenGrant, ClioError> {
    let mut attempt = 1;
    loop {
        match ctx.clio.refresh(region, credentials, refresh_token).await {
            Err(error) if error.is_retryable() && attempt < ctx.config.refresh.attempts => {
                let backoff = doubling(
                    StdDuration::from_millis(ctx.config.refresh.backoff_ms),
                    attempt,
                    MAX_RETRY_WAIT,
                );
                let wait = error.retry_after().unwrap_or(backoff).min(MAX_RETRY_WAIT);
                tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "refresh failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Writes what Clio returned, with its TOKEN_REFRESHED event, in one short commit that
/// also releases the claim and clears any failure backoff (see [`write_tokens`]).
async fn store_tokens(
    ctx: &Context,
    connection: &Connection,
    claim: Uuid,
    grant: &TokenGrant,
    due: Due,
    actor: Actor,
) -> Result<Fresh, AuthError> {
    let id = connection.id;
    let now = ctx.now();
    let lifetime = grant
        .expires_in
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(3_600);
    let new_expiry = now + Duration::seconds(lifetime);
    let access = ctx.vault.seal(&grant.access_token, &access_binding(id))?;
    // Clio normally keeps the refresh token; store a new one only when it sends one.
    let rotated = grant
        .refresh_token
        .as_ref()
        .map(|token| ctx.vault.seal(token, &refresh_binding(id)))
        .transpose()?;
    let event = connection
        .event(EventKind::TokenRefreshed, actor, now)
        .payload(serde_json::json!({
            "trigger": due.as_str(),
            "expires_in_secs": lifetime,
            "access_token_expires_at": new_expiry.to_rfc3339(),
            "refresh_token_rotated": rotated.is_some(),
        }))
        .build();
    let tokens = RefreshedTokens {
        connection: id,
        access_token: &access,
        refresh_token: rotated.as_ref(),
        access_expires_at: new_expiry,
        token_lifetime_secs: lifetime,
        refreshed_at: now,
        from_version: connection.token_version,
    };
    if !write_tokens(ctx, &tokens, event).await? {
        // Reconnected, revoked or marked while Clio answered: what is stored now wins.
        tracing::info!("connection changed during the refresh; its answer is not stored");
        store::connections::refresh::release_claim(&ctx.pool, id, claim).await?;
        let now_stored = connections::get(ctx, id).await?;
        require_usable(&now_stored)?;
        return current(ctx, &now_stored);
    }
    tracing::info!(
        expires_in_secs = lifetime,
        rotated = rotated.is_some(),
        "access token refreshed"
    );
    Ok(Fresh {
        access_token: grant.access_token.clone(),
        expires_at: new_expiry,
        // `replace_tokens` wrote them over `from_version`, bumping it once.
        token_version: connection.token_version + 1,
    })
}

/// Writes the tokens and their event in their own commit. Retried on database failures;
/// an event the outbox refuses never costs the tokens (they are then written alone).
/// Whether they were written: only over the token the refresh started from, so a
/// reconnect or revocation meanwhile wins, and tokens never come back to a revoked
/// connection.
async fn write_tokens(
    ctx: &Context,
    tokens: &RefreshedTokens<'_>,
    event: AuditEvent,
) -> Result<bool, AuthError> {
    let mut with_event = Some(event);
    let mut attempt = 1;
    loop {
        let write = async {
            let mut tx = ctx.pool.begin().await?;
            let written = store::connections::refresh::replace_tokens(&mut *tx, tokens).await?;
            if written && let Some(event) = with_event.clone() {
                audit_outbox::enqueue(&mut tx, event).await?;
            }
            tx.commit().await?;
            Ok::<bool, AuthError>(written)
        }
        .await;
        match write {
            Ok(written) => return Ok(written),
            Err(AuthError::Outbox(error)) if with_event.is_some() => {
                tracing::error!(%error, "the outbox refused the TOKEN_REFRESHED event; storing the tokens without it");
                with_event = None;
            }
            Err(error) if attempt < STORE_ATTEMPTS => {
                tracing::warn!(%error, attempt, "cannot store the refreshed tokens yet; retrying");
                let wait = doubling(StdDuration::from_millis(100), attempt, MAX_RETRY_WAIT);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(error) => {
                tracing::error!(%error, rotated = tokens.refresh_token.is_some(), "refreshed tokens could not be stored");
                return Err(error);
            }
        }
    }
}

/// Gives the claim back after a failed refresh and sets when the proactive refresher may
/// try again: `failure_backoff_secs` doubling per consecutive failure, capped.
async fn release_after_failure(
    ctx: &Context,
    connection: &Connection,
    claim: Uuid,
    error: &AuthError,
) -> Result<(), AuthError> {
    let refresh = &ctx.config.refresh;
    let failure = RefreshFailure {
        at: ctx.now(),
        backoff_secs: refresh.failure_backoff_secs as f64,
        max_backoff_secs: refresh.max_failure_backoff_secs as f64,
        error: failure_kind(error),
    };
    store::connections::refresh::release_claim_after_failure(
        &ctx.pool,
        connection.id,
        claim,
        &failure,
    )
    .await
}

/// What went wrong, in words that never carry a secret (no Clio body, no token).
fn failure_kind(error: &AuthError) -> &'static str {
    match error {
        AuthError::ClioUnavailable(_) => "clio unavailable",
        AuthError::FailedPrecondition(_) => "clio refused the refresh",
        AuthError::Vault(_) => "stored secret does not decrypt",
        AuthError::Database(_) => "database",
        AuthError::Outbox(_) => "audit outbox",
        AuthError::InvalidArgument { .. }
        | AuthError::NotFound(_)
        | AuthError::PermissionDenied(_)
        | AuthError::AlreadyExists(_)
        | AuthError::Internal(_) => "internal",
    }
}

/// The grant is dead at Clio: its tokens are worthless, so they are not kept. Only if
/// the refresh token refused is still the stored one (a reconnect meanwhile wins; the
/// claim is then given back).
async fn mark_needs_reconnect(
    ctx: &Context,
    connection: &Connection,
    claim: Uuid,
    description: &str,
    actor: Actor,
) -> Result<(), AuthError> {
    let now = ctx.now();
    let event: AuditEvent = connection
        .event(EventKind::ConnectionNeedsReconnect, actor, now)
        .reason("Clio refused the refresh token (invalid_grant)")
        .payload(serde_json::json!({ "clio_error": "invalid_grant", "detail": description }))
        .build();
    let mut tx = ctx.pool.begin().await?;
    let marked = store::connections::refresh::mark_needs_reconnect(
        &mut *tx,
        connection.id,
        connection.token_version,
    )
    .await?;
    if marked {
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    if !marked {
        store::connections::refresh::release_claim(&ctx.pool, connection.id, claim).await?;
        return Ok(());
    }
    ctx.events_committed();
    tracing::warn!(connection_id = %connection.id, "connection needs reconnecting: refresh token refused");
    Ok(())
}

/// How many due connections one pass of the proactive refresher takes.
const PROACTIVE_BATCH: i64 = 100;

/// Refreshes connections before they expire, every `refresh.interval_ms`, until shutdown.
pub async fn run_proactive(ctx: Context, shutdown: CancellationToken) {
    let interval = StdDuration::from_millis(ctx.config.refresh.interval_ms);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = proactive_pass(&ctx).await {
            tracing::warn!(%error, "proactive refresh pass failed");
        }
    }
}

/// One pass: active connections inside their margin whose backoff (after failed
/// refreshes) has run out, those that have not been failing first, then the earliest to
/// expire. A failed refresh pushes its connection's next attempt out, so failing
/// connections cannot take every pass.
pub async fn proactive_pass(ctx: &Context) -> Result<usize, AuthError> {
    let due = DueForRefresh {
        now: ctx.now(),
        margin_ratio: ctx.config.refresh.margin_ratio,
        max_margin_secs: ctx.config.refresh.max_margin_secs as f64,
        limit: PROACTIVE_BATCH,
    };
    let due = store::connections::refresh::due(&ctx.pool, &due).await?;
    let mut refreshed = 0;
    for id in due {
        match refresh_if_due(ctx, id, Due::WithinMargin, system_actor()).await {
            Ok(_) => refreshed += 1,
            // Already logged where it was decided; its backoff says when it is tried again.
            Err(error) => tracing::warn!(connection_id = %id, %error, "proactive refresh failed"),
        }
    }
    Ok(refreshed)
}
