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
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::audit_events::service_actor;
use crate::domain::ConnectionId;
use crate::error::AuthError;
use crate::store;
use crate::store::lease_usage::{self, LeaseUses};

/// One lease to record: the connection as the lease read it (its `token_version`), who
/// leased it, why and when.
pub struct LeaseUse<'a> {
    pub connection: ConnectionId,
    pub token_version: i64,
    pub caller: &'a str,
    pub purpose: &'a str,
    pub at: DateTime<Utc>,
}

/// What became of a lease's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed: the token may leave.
    Written,
    /// Not written: the connection is no longer active at the version the lease read
    /// (revoked, disconnected, or its tokens changed, by any replica). The lease must read
    /// the connection again.
    Stale,
}

/// One lease waiting to be written, and who waits for it.
struct Pending {
    connection: ConnectionId,
    token_version: i64,
    caller: String,
    purpose: String,
    at: DateTime<Utc>,
    written: oneshot::Sender<Result<Recorded, String>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A writer task is draining `pending`.
    writing: bool,
}

/// Records leases with group commit: the leases that arrive while one group is being
/// written are written together as the next group, in one statement (one row update per
/// connection and caller, one commit and WAL flush), and each caller still waits until
/// its lease is committed before its token leaves. The same statement checks that each
/// lease's connection is still active at the version the lease read, so a lease served
/// from what this process remembers is never handed out for a connection changed since.
#[derive(Clone, Default)]
pub struct UsageRecorder {
    queue: Arc<Mutex<Queue>>,
}

impl UsageRecorder {
    /// Adds one lease to the connection's and caller's row if the connection is still
    /// active at `lease.token_version` (committed before it returns).
    pub async fn record(&self, pool: &PgPool, lease: &LeaseUse<'_>) -> Result<Recorded, AuthError> {
        let (written, outcome) = oneshot::channel();
        let start_writer = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.pending.push(Pending {
                connection: lease.connection,
                token_version: lease.token_version,
                caller: lease.caller.to_owned(),
                purpose: lease.purpose.to_owned(),
                at: lease.at,
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
            Ok(Ok(recorded)) => return Ok(recorded),
            Ok(Err(error)) => error,
            Err(_) => "the lease usage writer stopped".to_owned(),
        };
        Err(AuthError::Database(sqlx::Error::Protocol(format!(
            "lease usage not recorded: {failed}"
        ))))
    }

    /// Writes what is pending, batch after batch, until nothing is. One pooled connection
    /// serves the batches of a busy spell (a batch does not queue for the pool behind the
    /// requests it is writing for); it goes back to the pool when the queue is empty, or
    /// after a failure.
    async fn write_pending(self, pool: PgPool) {
        let mut connection: Option<PoolConnection<Postgres>> = None;
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.writing = false;
                    return;
                }
                // The next batch is likely as big: room for it up front.
                let room = queue.pending.len();
                std::mem::replace(&mut queue.pending, Vec::with_capacity(room))
            };
            let written = match &mut connection {
                Some(held) => write_batch(held, &batch).await,
                None => match pool.acquire().await {
                    Ok(acquired) => write_batch(connection.insert(acquired), &batch).await,
                    Err(error) => Err(error.into()),
                },
            };
            // A caller that left no longer waits; its lease is recorded all the same.
            match written {
                Ok(recorded) => {
                    for (pending, recorded) in batch.into_iter().zip(recorded) {
                        let _ = pending.written.send(Ok(recorded));
                    }
                }
                Err(error) => {
                    connection = None;
                    let error = error.to_string();
                    for pending in batch {
                        let _ = pending.written.send(Err(error.clone()));
                    }
                }
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

/// One statement (so one commit) for a batch of leases: one row update per connection and
/// caller, for the leases whose connection is still current. Returns each lease's
/// outcome, in batch order.
async fn write_batch(
    db: &mut PoolConnection<Postgres>,
    batch: &[Pending],
) -> Result<Vec<Recorded>, AuthError> {
    let mut groups: Vec<LeaseUses<'_>> = Vec::new();
    let mut group_of: BTreeMap<(ConnectionId, i64, &str), usize> = BTreeMap::new();
    let mut lease_groups = Vec::with_capacity(batch.len());
    for lease in batch {
        let key = (lease.connection, lease.token_version, lease.caller.as_str());
        let group = *group_of.entry(key).or_insert_with(|| {
            groups.push(LeaseUses {
                connection: lease.connection,
                token_version: lease.token_version,
                caller: &lease.caller,
                count: 0,
                first_at: lease.at,
                last_at: lease.at,
                purposes: Vec::new(),
            });
            groups.len() - 1
        });
        lease_groups.push(group);
        let uses = &mut groups[group];
        uses.count += 1;
        uses.first_at = uses.first_at.min(lease.at);
        uses.last_at = uses.last_at.max(lease.at);
        if uses.purposes.len() < lease_usage::max_purposes()
            && !uses.purposes.contains(&lease.purpose.as_str())
        {
            uses.purposes.push(&lease.purpose);
        }
    }
    let current = lease_usage::add_if_current(&mut **db, &groups).await?;
    Ok(lease_groups
        .into_iter()
        .map(|group| match current.get(group) {
            Some(true) => Recorded::Written,
            _ => Recorded::Stale,
        })
        .collect())
}
