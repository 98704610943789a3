//! Retrying deauthorizations Clio did not confirm, with capped exponential backoff.
//!
//! Each pending row is taken under `FOR UPDATE SKIP LOCKED`, so replicas share the work
//! without doing a row twice. Success (or Clio saying the grant is already dead) drops
//! the kept token and records REVOCATION_RETRIED; a row whose CONNECTION_REVOKED was never
//! written (the process died mid-revocation) gets that event instead. After
//! `revocation.max_attempts` the token is dropped and the give-up is recorded: keeping a
//! live token forever is worse than an operator following up.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use clio_api::Region;
use proto::common::v1::EventKind;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::apps;
use crate::audit_events::system_actor;
use crate::connections;
use crate::context::Context;
use crate::domain::ConnectionId;
use crate::error::AuthError;
use crate::revocation::{
    HeldTokens, deauthorize_at_clio, keep_for_retry, pending_access_binding,
    pending_refresh_binding, revoked_event,
};

/// Rows looked at per pass.
const BATCH: i64 = 20;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let interval = StdDuration::from_millis(ctx.config.revocation.retry_interval_ms);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = pass(&ctx).await {
            tracing::warn!(%error, "deauthorize retry pass failed");
        }
    }
}

/// One pass over the rows that are due. Returns how many were attempted.
pub async fn pass(ctx: &Context) -> Result<usize, AuthError> {
    let due: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT connection_id FROM pending_deauthorizations WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT $2",
    )
    .bind(ctx.now())
    .bind(BATCH)
    .fetch_all(&ctx.pool)
    .await?;
    let mut attempted = 0;
    for (id,) in due {
        match retry_one(ctx, ConnectionId(id)).await {
            Ok(true) => attempted += 1,
            Ok(false) => {}
            Err(error) => tracing::warn!(connection_id = %id, %error, "deauthorize retry failed"),
        }
    }
    Ok(attempted)
}

#[derive(sqlx::FromRow)]
struct Pending {
    region: String,
    app_id: Uuid,
    access_token_ct: Vec<u8>,
    refresh_token_ct: Option<Vec<u8>>,
    revoke_event_recorded: bool,
    revoked_by: String,
    revocation_reason: String,
    revoked_at: DateTime<Utc>,
    attempts: i32,
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn retry_one(ctx: &Context, id: ConnectionId) -> Result<bool, AuthError> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let pending: Option<Pending> = sqlx::query_as(
        "SELECT region, app_id, access_token_ct, refresh_token_ct, revoke_event_recorded, revoked_by, \
         revocation_reason, revoked_at, attempts FROM pending_deauthorizations \
         WHERE connection_id = $1 AND next_attempt_at <= $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(id.0)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(pending) = pending else {
        return Ok(false);
    };
    let region: Region = pending
        .region
        .parse()
        .map_err(|e| AuthError::Internal(format!("pending deauthorization {id}: {e}")))?;
    let app = apps::load(&mut tx, crate::domain::AppId(pending.app_id), false).await?;
    let connection = connections::load(&mut tx, id, false).await?;
    let mut tokens = HeldTokens::new(
        ctx.vault
            .open(&pending.access_token_ct, &pending_access_binding(id))?,
        pending
            .refresh_token_ct
            .as_deref()
            .map(|ct| ctx.vault.open(ct, &pending_refresh_binding(id)))
            .transpose()?,
        // Unknown by now: deauthorize first, refresh only if Clio refuses the token.
        None,
    );
    let credentials = app.credentials(&ctx.vault)?;
    let (outcome, detail) = deauthorize_at_clio(ctx, region, &credentials, &mut tokens).await;
    // When Clio's answer came: the offboarding report's clock stops at a confirmation.
    let answered_at = ctx.now();
    let confirmed_at = outcome.is_final().then_some(answered_at);
    let attempts = pending.attempts + 1;
    let gave_up = !outcome.is_final()
        && attempts >= i32::try_from(ctx.config.revocation.max_attempts).unwrap_or(i32::MAX);
    if outcome.is_final() || gave_up {
        sqlx::query("DELETE FROM pending_deauthorizations WHERE connection_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
    } else {
        keep_for_retry(&mut tx, &ctx.vault, id, &tokens).await?;
        let backoff_ms = ctx
            .config
            .revocation
            .first_retry_after_ms
            .saturating_mul(1u64 << attempts.clamp(0, 20));
        let backoff = StdDuration::from_millis(backoff_ms).min(StdDuration::from_secs(
            ctx.config.revocation.max_backoff_secs,
        ));
        sqlx::query(
            "UPDATE pending_deauthorizations SET attempts = $2, last_error = $3, next_attempt_at = $4, \
             revoke_event_recorded = true WHERE connection_id = $1",
        )
        .bind(id.0)
        .bind(attempts)
        .bind(&detail)
        .bind(now + Duration::from_std(backoff).unwrap_or(Duration::hours(1)))
        .execute(&mut *tx)
        .await?;
    }
    if !pending.revoke_event_recorded {
        let event = revoked_event(
            &connection,
            &pending.revoked_by,
            &pending.revocation_reason,
            pending.revoked_at,
            (outcome, &detail),
            confirmed_at,
            u32::try_from(attempts).unwrap_or(0),
        );
        audit_outbox::enqueue(&mut tx, event).await?;
    } else if outcome.is_final() || gave_up {
        let reported = if gave_up { "gave_up" } else { outcome.as_str() };
        let mut payload = serde_json::json!({
            "clio_outcome": reported,
            "attempts": attempts,
            "detail": detail,
            "revoked_at": pending.revoked_at.to_rfc3339(),
        });
        if let Some(at) = confirmed_at {
            payload["clio_confirmed_at"] = serde_json::Value::String(at.to_rfc3339());
        }
        let event = connection
            .event(EventKind::RevocationRetried, system_actor(), answered_at)
            .reason(&pending.revocation_reason)
            .payload(payload)
            .build();
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    if gave_up {
        tracing::error!(attempts, detail = %detail, "gave up deauthorizing at Clio; the grant may still be live there");
    } else {
        tracing::info!(outcome = outcome.as_str(), attempts, "deauthorize retried");
    }
    Ok(true)
}
