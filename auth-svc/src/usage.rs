//! Lease usage, aggregated and durable: each lease adds to a `lease_usage` row (one per
//! connection and caller) before the token is handed out, so a crash loses no use; a
//! flusher turns the rows into one TOKEN_LEASED event per connection and caller per
//! window, moves the connections' last-used times and deletes the rows, all in one
//! transaction, so a busy importer does not write an audit event per lease and each use is
//! reported exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::common::v1::EventKind;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::audit_events::service_actor;
use crate::connections::Connection;
use crate::domain::ConnectionId;
use crate::error::AuthError;
use crate::store;
use crate::store::lease_usage::{self, LeaseUses};

/// One lease waiting to be written, and who waits for it.
struct Pending {
    connection: ConnectionId,
    caller: String,
    purpose: String,
    at: DateTime<Utc>,
    written: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A writer task is draining `pending`.
    writing: bool,
}

/// Records leases with group commit: concurrent leases are written in one transaction
/// (one row update per connection and caller, one WAL flush), and each caller still waits
/// until its lease is committed before its token leaves. Many callers leasing the same
/// connection so no longer queue one commit at a time on its row.
#[derive(Clone, Default)]
pub struct UsageRecorder {
    queue: Arc<Mutex<Queue>>,
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
        let (written, outcome) = oneshot::channel();
        let start_writer = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.pending.push(Pending {
                connection: connection.id,
                caller: caller.to_owned(),
                purpose: purpose.to_owned(),
                at,
                written,
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            // Its own task: a caller that goes away mid-write must not strand the others.
            tokio::spawn(self.clone().write_pending(pool.clone()));
        }
        // Failures reach every lease of the batch as text (sqlx errors do not clone); they
        // are the database's, so the caller sees UNAVAILABLE and may try again.
        let failed = match outcome.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => "the lease usage writer stopped".to_owned(),
        };
        Err(AuthError::Database(sqlx::Error::Protocol(format!(
            "lease usage not recorded: {failed}"
        ))))
    }

    /// Writes what is pending, batch after batch, until nothing is.
    async fn write_pending(self, pool: PgPool) {
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.writing = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let result = write_batch(&pool, &batch)
                .await
                .map_err(|error| error.to_string());
            for pending in batch {
                // A caller that left no longer waits; its lease is recorded all the same.
                let _ = pending.written.send(result.clone());
            }
        }
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

/// One transaction for a batch of leases: one row update per connection and caller.
async fn write_batch(pool: &PgPool, batch: &[Pending]) -> Result<(), AuthError> {
    let mut groups: BTreeMap<(ConnectionId, &str), LeaseUses<'_>> = BTreeMap::new();
    for lease in batch {
        let uses = groups
            .entry((lease.connection, lease.caller.as_str()))
            .or_insert_with(|| LeaseUses {
                connection: lease.connection,
                caller: &lease.caller,
                count: 0,
                first_at: lease.at,
                last_at: lease.at,
                purposes: Vec::new(),
            });
        uses.count += 1;
        uses.first_at = uses.first_at.min(lease.at);
        uses.last_at = uses.last_at.max(lease.at);
        if uses.purposes.len() < lease_usage::max_purposes()
            && !uses.purposes.contains(&lease.purpose.as_str())
        {
            uses.purposes.push(&lease.purpose);
        }
    }
    let mut tx = pool.begin().await?;
    for uses in groups.values() {
        lease_usage::add(&mut *tx, uses).await?;
    }
    tx.commit().await?;
    Ok(())
}
