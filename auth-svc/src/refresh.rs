//! Refreshing access tokens: one refresh per connection at a time across all replicas.
//!
//! A refresh locks the connection row (`SELECT ... FOR UPDATE`), then checks again whether
//! it is still needed: whoever waited on the lock finds the token someone else just
//! refreshed and uses it, so a crowd of leases of an expired token makes one call to Clio.
//! `invalid_grant` means the grant is gone (revoked at Clio): the connection needs the
//! person to reconnect and its dead tokens are dropped. Transient failures are retried a
//! bounded number of times under the lock and leave the connection as it was.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use clio_api::ClioError;
use proto::common::v1::{Actor, EventKind};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::apps;
use crate::audit_events::system_actor;
use crate::connect::clio_failure;
use crate::connections::{self, Connection, access_binding, refresh_binding};
use crate::context::Context;
use crate::domain::{ConnectionId, ConnectionStatus};
use crate::error::AuthError;

/// Longest wait between attempts, whatever Clio's Retry-After says: the row stays locked.
const MAX_RETRY_WAIT: StdDuration = StdDuration::from_secs(5);

/// When a refresh is needed, decided again once the row is locked.
#[derive(Debug, Clone, Copy)]
pub enum Due {
    /// The token expires at or before `by` (a lease needs some time left), unless the
    /// token changed since `seen_version`: a lease that waited on the lock uses the token
    /// the first one refreshed, even when Clio hands out tokens shorter-lived than `by`.
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
}

/// A usable access token.
pub struct Fresh {
    pub access_token: SecretString,
    pub expires_at: DateTime<Utc>,
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
    })
}

/// Refreshes `id` if still `due` once its row is locked; returns the usable token.
#[tracing::instrument(skip_all, fields(connection_id = %id, trigger = due.as_str()))]
pub async fn refresh_if_due(
    ctx: &Context,
    id: ConnectionId,
    due: Due,
    actor: Actor,
) -> Result<Fresh, AuthError> {
    let mut tx = ctx.pool.begin().await?;
    let connection = connections::load(&mut tx, id, true).await?;
    require_usable(&connection)?;
    let now = ctx.now();
    let expires_at = connection.access_expires_at.unwrap_or(now);
    let needed = match due {
        Due::ExpiresBy { by, seen_version } => {
            (connection.token_version == seen_version && expires_at <= by) || expires_at <= now
        }
        Due::WithinMargin => expires_at - margin(ctx, connection.token_lifetime_secs) <= now,
        Due::Forced { seen_version } => connection.token_version == seen_version,
    };
    if !needed {
        // Someone refreshed while we waited for the lock.
        let fresh = current(ctx, &connection)?;
        tx.commit().await?;
        return Ok(fresh);
    }
    let app = apps::load(&mut tx, connection.app_id, false).await?;
    let credentials = app.credentials(&ctx.vault)?;
    let refresh_ct = connection.refresh_token_ct.as_deref().ok_or_else(|| {
        AuthError::Internal(format!("active connection {id} has no refresh token"))
    })?;
    let refresh_token = ctx.vault.open(refresh_ct, &refresh_binding(id))?;

    let mut attempt = 1;
    let outcome = loop {
        match ctx
            .clio
            .refresh(connection.region, &credentials, &refresh_token)
            .await
        {
            Err(error) if error.is_retryable() && attempt < ctx.config.refresh.attempts => {
                let backoff =
                    StdDuration::from_millis(ctx.config.refresh.backoff_ms) * 2u32.pow(attempt - 1);
                let wait = error.retry_after().unwrap_or(backoff).min(MAX_RETRY_WAIT);
                tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "refresh failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => break other,
        }
    };
    let grant = match outcome {
        Ok(grant) => grant,
        Err(ClioError::InvalidGrant { description }) => {
            mark_needs_reconnect(ctx, tx, &connection, &description, actor).await?;
            return Err(AuthError::FailedPrecondition(format!(
                "connection {id} needs the person to reconnect: Clio refused the refresh token (invalid_grant)"
            )));
        }
        Err(error) => {
            if matches!(error, ClioError::InvalidClient { .. }) {
                tracing::error!(%error, app_id = %app.id, "Clio refused the app's client credentials on refresh");
            }
            return Err(clio_failure("token refresh", error));
        }
    };

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
    sqlx::query(
        "UPDATE connections SET access_token_ct = $2, access_token_key_id = $3, \
         refresh_token_ct = COALESCE($4, refresh_token_ct), refresh_token_key_id = COALESCE($5, refresh_token_key_id), \
         access_expires_at = $6, token_lifetime_secs = $7, token_version = token_version + 1, refreshed_at = $8 \
         WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(&access.ciphertext)
    .bind(&access.key_id)
    .bind(rotated.as_ref().map(|s| s.ciphertext.clone()))
    .bind(rotated.as_ref().map(|s| s.key_id.clone()))
    .bind(new_expiry)
    .bind(lifetime)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let event = connection
        .event(EventKind::TokenRefreshed, actor, now)
        .payload(serde_json::json!({
            "trigger": due.as_str(),
            "expires_in_secs": lifetime,
            "access_token_expires_at": new_expiry.to_rfc3339(),
            "refresh_token_rotated": rotated.is_some(),
        }))
        .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(
        expires_in_secs = lifetime,
        rotated = rotated.is_some(),
        "access token refreshed"
    );
    Ok(Fresh {
        access_token: grant.access_token,
        expires_at: new_expiry,
    })
}

async fn mark_needs_reconnect(
    ctx: &Context,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    connection: &Connection,
    description: &str,
    actor: Actor,
) -> Result<(), AuthError> {
    let now = ctx.now();
    // The grant is dead at Clio: its tokens are worthless, so they are not kept.
    sqlx::query(
        "UPDATE connections SET status = 'needs_reconnect', access_token_ct = NULL, access_token_key_id = NULL, \
         refresh_token_ct = NULL, refresh_token_key_id = NULL, token_version = token_version + 1 \
         WHERE connection_id = $1",
    )
    .bind(connection.id.0)
    .execute(&mut *tx)
    .await?;
    let event = connection
        .event(EventKind::ConnectionNeedsReconnect, actor, now)
        .reason("Clio refused the refresh token (invalid_grant)")
        .payload(serde_json::json!({ "clio_error": "invalid_grant", "detail": description }))
        .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
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

/// One pass: every active connection inside its margin.
pub async fn proactive_pass(ctx: &Context) -> Result<usize, AuthError> {
    let now = ctx.now();
    let due: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "SELECT connection_id FROM connections WHERE status = 'active' \
         AND access_expires_at - make_interval(secs => LEAST(COALESCE(token_lifetime_secs, 3600) * $2, $3)) <= $1 \
         ORDER BY access_expires_at LIMIT $4",
    )
    .bind(now)
    .bind(ctx.config.refresh.margin_ratio)
    .bind(ctx.config.refresh.max_margin_secs as f64)
    .bind(PROACTIVE_BATCH)
    .fetch_all(&ctx.pool)
    .await?;
    let mut refreshed = 0;
    for (id,) in due {
        match refresh_if_due(ctx, ConnectionId(id), Due::WithinMargin, system_actor()).await {
            Ok(_) => refreshed += 1,
            // Already logged where it was decided; the next pass tries again.
            Err(error) => tracing::warn!(connection_id = %id, %error, "proactive refresh failed"),
        }
    }
    Ok(refreshed)
}
