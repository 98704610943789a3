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
use proto::common::v1::{AuditEvent, EventKind};
use tokio_util::sync::CancellationToken;

use crate::audit_events::system_actor;
use crate::connections::Connection;
use crate::context::Context;
use crate::domain::{AppId, ConnectionId};
use crate::error::AuthError;
use crate::revocation::{
    ClioOutcome, HeldTokens, deauthorize_at_clio, keep_for_retry, revoked_event,
};
use crate::store;
use crate::store::connections::ConnectionRevocation;
use crate::store::pending_deauthorizations::{
    self, NextAttempt, PendingDeauthorization, access_binding, refresh_binding,
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
    let due = pending_deauthorizations::due(&ctx.pool, ctx.now(), BATCH).await?;
    let mut attempted = 0;
    for id in due {
        match retry_one(ctx, id).await {
            Ok(true) => attempted += 1,
            Ok(false) => {}
            Err(error) => tracing::warn!(connection_id = %id, %error, "deauthorize retry failed"),
        }
    }
    Ok(attempted)
}

/// Retries one row if it is still due and nobody else holds it. The row stays locked
/// until the attempt is recorded, so no other replica retries it meanwhile.
#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn retry_one(ctx: &Context, id: ConnectionId) -> Result<bool, AuthError> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let Some(pending) = pending_deauthorizations::lock_if_due(&mut *tx, id, now).await? else {
        return Ok(false);
    };
    let region: Region = pending
        .region
        .parse()
        .map_err(|e| AuthError::Internal(format!("pending deauthorization {id}: {e}")))?;
    let app = store::apps::load(&mut *tx, AppId(pending.app_id)).await?;
    let connection = store::connections::load(&mut *tx, id).await?;
    let mut tokens = HeldTokens::new(
        ctx.vault
            .open(&pending.access_token_ct, &access_binding(id))?,
        pending
            .refresh_token_ct
            .as_deref()
            .map(|ct| ctx.vault.open(ct, &refresh_binding(id)))
            .transpose()?,
        // Unknown by now: deauthorize first, refresh only if Clio refuses the token.
        None,
    );
    let credentials = app.credentials(&ctx.vault)?;
    let (outcome, detail) = deauthorize_at_clio(ctx, region, &credentials, &mut tokens).await;
    let attempts = pending.attempts + 1;
    let attempt = Attempt {
        outcome,
        detail: &detail,
        attempts,
        gave_up: !outcome.is_final()
            && attempts >= i32::try_from(ctx.config.revocation.max_attempts).unwrap_or(i32::MAX),
        // When Clio's answer came: the offboarding report's clock stops at a confirmation.
        answered_at: ctx.now(),
    };
    if outcome.is_final() || attempt.gave_up {
        pending_deauthorizations::delete(&mut *tx, id).await?;
    } else {
        keep_for_retry(&mut tx, &ctx.vault, id, &tokens).await?;
        let next = NextAttempt {
            attempts,
            last_error: &detail,
            at: now + backoff(ctx, attempts),
        };
        pending_deauthorizations::schedule_retry(&mut *tx, id, &next).await?;
    }
    if let Some(event) = attempt.event(&connection, &pending) {
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    if attempt.gave_up {
        tracing::error!(attempts, detail = %detail, "gave up deauthorizing at Clio; the grant may still be live there");
    } else {
        tracing::info!(outcome = outcome.as_str(), attempts, "deauthorize retried");
    }
    Ok(true)
}

/// How long after failed attempt number `attempts` the next one is made: the first retry
/// delay doubling per attempt, capped.
fn backoff(ctx: &Context, attempts: i32) -> Duration {
    let revocation = &ctx.config.revocation;
    // After failed attempt n the wait is first * 2^n: attempt n + 1 of the doubling.
    let backoff = service_runtime::backoff::doubling(
        StdDuration::from_millis(revocation.first_retry_after_ms),
        u32::try_from(attempts.max(0))
            .unwrap_or(0)
            .saturating_add(1),
        StdDuration::from_secs(revocation.max_backoff_secs),
    );
    Duration::from_std(backoff).unwrap_or(Duration::hours(1))
}

/// What one retry came to.
struct Attempt<'a> {
    outcome: ClioOutcome,
    detail: &'a str,
    /// Attempts so far, this one included.
    attempts: i32,
    /// Clio still failed and this was the last attempt allowed.
    gave_up: bool,
    answered_at: DateTime<Utc>,
}

impl Attempt<'_> {
    /// CONNECTION_REVOKED if the revocation never recorded it (the process died
    /// mid-revocation); else REVOCATION_RETRIED once the retries end; else nothing.
    fn event(
        &self,
        connection: &Connection,
        pending: &PendingDeauthorization,
    ) -> Option<AuditEvent> {
        let confirmed_at = self.outcome.is_final().then_some(self.answered_at);
        if !pending.revoke_event_recorded {
            let revocation = ConnectionRevocation {
                at: pending.revoked_at,
                by: &pending.revoked_by,
                reason: &pending.revocation_reason,
            };
            return Some(revoked_event(
                connection,
                &revocation,
                (self.outcome, self.detail),
                confirmed_at,
                u32::try_from(self.attempts).unwrap_or(0),
            ));
        }
        if !self.outcome.is_final() && !self.gave_up {
            return None;
        }
        let reported = if self.gave_up {
            "gave_up"
        } else {
            self.outcome.as_str()
        };
        let mut payload = serde_json::json!({
            "clio_outcome": reported,
            "attempts": self.attempts,
            "detail": self.detail,
            "revoked_at": pending.revoked_at.to_rfc3339(),
        });
        if let Some(at) = confirmed_at {
            payload["clio_confirmed_at"] = serde_json::Value::String(at.to_rfc3339());
        }
        let event = connection
            .event(
                EventKind::RevocationRetried,
                system_actor(),
                self.answered_at,
            )
            .reason(&pending.revocation_reason)
            .payload(payload)
            .build();
        Some(event)
    }
}
