//! Lease usage, aggregated and durable: each lease adds to a `lease_usage` row (one per
//! connection and caller) before the token is handed out, so a crash loses no use; a
//! flusher turns the rows into one TOKEN_LEASED event per connection and caller per
//! window, moves the connections' last-used times and deletes the rows, all in one
//! transaction, so a busy importer does not write an audit event per lease and each use is
//! reported exactly once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::common::v1::EventKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit_events::service_actor;
use crate::connections::{self, Connection};
use crate::domain::ConnectionId;
use crate::error::AuthError;

/// Distinct purposes kept per window (a job id each); beyond this only the count grows.
const MAX_PURPOSES: i32 = 20;

#[derive(Clone, Default)]
pub struct UsageRecorder;

#[derive(sqlx::FromRow)]
struct Usage {
    connection_id: Uuid,
    caller: String,
    lease_count: i64,
    first_used_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    purposes: Vec<String>,
}

impl UsageRecorder {
    /// Adds one lease to the connection's and caller's row (committed before it returns).
    pub async fn record(
        &self,
        pool: &PgPool,
        connection: &Connection,
        caller: &str,
        purpose: &str,
        at: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        sqlx::query(
            "INSERT INTO lease_usage AS u (connection_id, caller, lease_count, first_used_at, \
             last_used_at, purposes) VALUES ($1, $2, 1, $3, $3, ARRAY[$4]) \
             ON CONFLICT (connection_id, caller) DO UPDATE SET \
             lease_count = u.lease_count + 1, \
             first_used_at = LEAST(u.first_used_at, EXCLUDED.first_used_at), \
             last_used_at = GREATEST(u.last_used_at, EXCLUDED.last_used_at), \
             purposes = CASE WHEN $4 = ANY(u.purposes) OR cardinality(u.purposes) >= $5 \
                        THEN u.purposes ELSE u.purposes || $4 END",
        )
        .bind(connection.id.0)
        .bind(caller)
        .bind(at)
        .bind(purpose)
        .bind(MAX_PURPOSES)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Writes the usage gathered so far: last-used times and one event per connection and
    /// caller. Returns how many events were enqueued.
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, AuthError> {
        let mut tx = pool.begin().await?;
        let mut rows: Vec<Usage> = sqlx::query_as(
            "DELETE FROM lease_usage RETURNING connection_id, caller, lease_count, \
             first_used_at, last_used_at, purposes",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by(|a, b| (a.connection_id, &a.caller).cmp(&(b.connection_id, &b.caller)));
        sqlx::query(
            "UPDATE connections c SET last_used_at = GREATEST(COALESCE(c.last_used_at, u.at), u.at) \
             FROM (SELECT id, max(at) AS at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) \
                   GROUP BY id) AS u WHERE c.connection_id = u.id",
        )
        .bind(rows.iter().map(|r| r.connection_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_used_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        for usage in &rows {
            let connection =
                connections::load(&mut tx, ConnectionId(usage.connection_id), false).await?;
            let event = connection
                .event(
                    EventKind::TokenLeased,
                    service_actor(&usage.caller),
                    usage.last_used_at,
                )
                .payload(serde_json::json!({
                    "lease_count": usage.lease_count,
                    "first_used_at": usage.first_used_at.to_rfc3339(),
                    "last_used_at": usage.last_used_at.to_rfc3339(),
                    "purposes": usage.purposes,
                }))
                .build();
            audit_outbox::enqueue(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Flushes every `interval` until shutdown, then once more.
    pub async fn run(
        self,
        pool: PgPool,
        interval: Duration,
        waker: audit_outbox::Waker,
        shutdown: CancellationToken,
    ) {
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(interval) => false,
            };
            match self.flush(&pool).await {
                Ok(0) => {}
                Ok(_) => waker.wake(),
                Err(error) => {
                    tracing::warn!(%error, "cannot write lease usage; kept for the next flush")
                }
            }
            if stopping {
                return;
            }
        }
    }
}
