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

use crate::audit_events::service_actor;
use crate::connections::Connection;
use crate::domain::ConnectionId;
use crate::error::AuthError;
use crate::store;
use crate::store::lease_usage::LeaseUse;

#[derive(Clone, Default)]
pub struct UsageRecorder;

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
        let lease = LeaseUse {
            connection: connection.id,
            caller,
            purpose,
            at,
        };
        store::lease_usage::add(pool, &lease).await
    }

    /// Writes the usage gathered so far: last-used times and one event per connection and
    /// caller. Returns how many events were enqueued.
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, AuthError> {
        let mut tx = pool.begin().await?;
        let mut rows = store::lease_usage::take_all(&mut *tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by(|a, b| (a.connection_id, &a.caller).cmp(&(b.connection_id, &b.caller)));
        let uses: Vec<_> = rows
            .iter()
            .map(|r| (r.connection_id, r.last_used_at))
            .collect();
        store::connections::record_last_used(&mut *tx, &uses).await?;
        for usage in &rows {
            let connection =
                store::connections::load(&mut *tx, ConnectionId(usage.connection_id)).await?;
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
