//! The database side of the event log: the pool the service works through, and reading
//! stored rows back into [`EventRecord`]s.
//!
//! Every pooled connection runs `SET ROLE audit_appender` (migration 0002), so even when
//! the configured login is a superuser the service itself holds only SELECT and INSERT on
//! the log. The append-only trigger covers the case where someone with more rights edits it.

use std::time::Duration;

use secrecy::ExposeSecret;
use service_runtime::config::DatabaseConfig;
use service_runtime::database::connect_and_migrate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Executor, PgPool, Row};
use uuid::Uuid;

use crate::canonical::canonical_text;
use crate::error::AuditError;
use crate::event::{EventBody, EventRecord, Refs};

/// The columns [`decode_event`] reads, in its order.
pub const EVENT_COLUMNS: &str = "tenant, sequence, event_id, kind, actor_kind, actor_id, \
     subject_kind, subject_id, connection_id, app_id, principal, clio_user_id, \
     clio_account_id, job_id, region, scopes, risk_tier, reason, source, occurred_at, \
     recorded_at, payload::text, prev_hash, hash";

/// Runs the migrations with the configured login and returns that login's pool (for
/// schema work `audit_appender` may not do, such as recreating a dropped projection).
pub async fn migrate(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    Ok(connect_and_migrate(config, &crate::MIGRATOR).await?)
}

/// Runs the migrations and brings the projections up to date with the configured login,
/// then opens the pool the service uses, whose connections work as `audit_appender`.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let migrating = migrate(config).await?;
    let ensured = crate::projections::ensure_current(&migrating).await;
    migrating.close().await;
    ensured?;
    let options: PgConnectOptions = config
        .url
        .expose_secret()
        .parse()
        .map_err(|e| anyhow::anyhow!("database url {}: {e}", config.redacted_url()))?;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET ROLE audit_appender").await?;
                Ok(())
            })
        })
        .connect_lazy_with(options);
    Ok(pool)
}

fn internal(what: &str, error: impl std::fmt::Display) -> AuditError {
    AuditError::Internal(format!("stored event {what}: {error}"))
}

/// A row selected with [`EVENT_COLUMNS`]. Columns are read by position: verification
/// decodes a million of these.
pub fn decode_event(row: &PgRow) -> Result<EventRecord, AuditError> {
    let sequence: i64 = row.try_get(1)?;
    let scopes: Vec<String> = row.try_get(15)?;
    let payload: String = row.try_get(21)?;
    let event_id: Uuid = row.try_get(2)?;
    Ok(EventRecord {
        body: EventBody {
            event_id,
            tenant: row.try_get(0)?,
            kind: row.try_get(3)?,
            actor_kind: row.try_get(4)?,
            actor_id: row.try_get(5)?,
            subject_kind: row.try_get(6)?,
            subject_id: row.try_get(7)?,
            refs: Refs {
                connection_id: row.try_get(8)?,
                app_id: row.try_get(9)?,
                principal: row.try_get(10)?,
                clio_user_id: row.try_get(11)?,
                clio_account_id: row.try_get(12)?,
                job_id: row.try_get(13)?,
                region: row.try_get(14)?,
            },
            scopes,
            risk_tier: row.try_get(16)?,
            reason: row.try_get(17)?,
            source: row.try_get(18)?,
            occurred_at: row.try_get(19)?,
            // jsonb prints its own spacing; the hash covers the canonical form.
            payload: canonical_text(&payload).map_err(|e| internal("payload", e))?,
        },
        sequence: u64::try_from(sequence).map_err(|e| internal("sequence", e))?,
        recorded_at: row.try_get(20)?,
        prev_hash: row.try_get(22)?,
        hash: row.try_get(23)?,
    })
}

/// A wire sequence as the database's bigint.
pub fn db_sequence(field: &str, value: u64) -> Result<i64, AuditError> {
    i64::try_from(value).map_err(|_| AuditError::invalid(field, "too large"))
}
