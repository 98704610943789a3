//! Writing events into the outbox, inside the producer's transaction.

use prost::Message;
use proto::common::v1::{AuditEvent, EventKind};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Serialises enqueue-to-commit across all writers, so outbox order is commit order.
pub(crate) const ENQUEUE_LOCK: i64 = 0x6175_6469_745f_6f62; // "audit_ob"

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("audit event: {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("cannot write the audit outbox: {0}")]
    Database(#[from] sqlx::Error),
}

/// Adds `event` to the outbox as part of `tx`; it is delivered only if `tx` commits.
///
/// An empty `event_id` gets a fresh UUID (v7, so ids sort by time); an unset
/// `occurred_at` gets now; strings and payload are fitted to audit-svc's limits
/// ([`crate::fit_to_limits`]). A missing tenant or kind is a bug of the producer and
/// refused (anything else audit-svc still refuses is quarantined by the relay). The
/// current span's trace context is kept with the event. Returns the event id.
///
/// Call it as the last statement before commit: from here to the commit the transaction
/// holds the outbox's ordering lock, and every other producer's enqueue waits for it.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    mut event: AuditEvent,
) -> Result<Uuid, OutboxError> {
    let event_id = if event.event_id.is_empty() {
        let id = Uuid::now_v7();
        event.event_id = id.to_string();
        id
    } else {
        Uuid::parse_str(&event.event_id).map_err(|e| OutboxError::Invalid {
            field: "event_id",
            problem: format!("not a UUID ({e})"),
        })?
    };
    if event.tenant.trim().is_empty() {
        return Err(OutboxError::Invalid {
            field: "tenant",
            problem: "must not be empty".into(),
        });
    }
    let kind = EventKind::try_from(event.kind)
        .ok()
        .filter(|k| *k != EventKind::Unspecified)
        .ok_or_else(|| OutboxError::Invalid {
            field: "kind",
            problem: "must be a known event kind".into(),
        })?;
    // Whatever a caller put in its strings, audit-svc must accept the stored event: a
    // refused one would hold up every event behind it.
    let fitted = crate::fit::fit_to_limits(&mut event);
    if !fitted.is_empty() {
        tracing::warn!(
            event_id = %event_id,
            kind = kind.as_str_name(),
            fields = ?fitted,
            "audit event fitted to audit-svc's limits"
        );
    }
    if event.occurred_at.is_none() {
        event.occurred_at = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ENQUEUE_LOCK)
        .execute(&mut **tx)
        .await?;
    // The work being recorded is the current span: audit-svc's span of the event joins it.
    let traceparent = service_runtime::trace_context::current_traceparent();
    sqlx::query(
        "INSERT INTO audit_outbox (event_id, kind, tenant, event, traceparent) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(kind.as_str_name())
    .bind(&event.tenant)
    .bind(event.encode_to_vec())
    .bind(traceparent)
    .execute(&mut **tx)
    .await?;
    Ok(event_id)
}

/// Events not yet accepted by audit-svc.
pub async fn pending_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL")
        .fetch_one(pool)
        .await
}
