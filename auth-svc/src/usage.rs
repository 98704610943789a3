//! Lease usage, aggregated: leases only touch memory; a flusher writes each connection's
//! last-used time and one TOKEN_LEASED event per connection and caller per window, so a
//! busy importer does not write a row or an audit event per lease.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::common::v1::{AuditEvent, EventKind};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit_events::service_actor;
use crate::connections::Connection;
use crate::error::AuthError;

/// Distinct purposes kept per window (a job id each); beyond this only the count grows.
const MAX_PURPOSES: usize = 20;

struct Usage {
    event: crate::audit_events::EventTemplate,
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    purposes: BTreeSet<String>,
}

#[derive(Clone, Default)]
pub struct UsageRecorder {
    window: Arc<Mutex<HashMap<(Uuid, String), Usage>>>,
}

impl UsageRecorder {
    pub fn record(&self, connection: &Connection, caller: &str, purpose: &str, at: DateTime<Utc>) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let usage = window
            .entry((connection.id.0, caller.to_owned()))
            .or_insert_with(|| Usage {
                event: crate::audit_events::EventTemplate::of(connection, service_actor(caller)),
                count: 0,
                first: at,
                last: at,
                purposes: BTreeSet::new(),
            });
        usage.count += 1;
        usage.first = usage.first.min(at);
        usage.last = usage.last.max(at);
        if usage.purposes.len() < MAX_PURPOSES {
            usage.purposes.insert(purpose.to_owned());
        }
    }

    fn take(&self) -> HashMap<(Uuid, String), Usage> {
        std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back a window that could not be written, merged with what came since.
    fn restore(&self, failed: HashMap<(Uuid, String), Usage>) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        for (key, old) in failed {
            match window.get_mut(&key) {
                Some(newer) => {
                    newer.count += old.count;
                    newer.first = newer.first.min(old.first);
                    newer.last = newer.last.max(old.last);
                    for purpose in old.purposes {
                        if newer.purposes.len() < MAX_PURPOSES {
                            newer.purposes.insert(purpose);
                        }
                    }
                }
                None => {
                    window.insert(key, old);
                }
            }
        }
    }

    /// Writes the current window: last-used times and one event per connection and caller.
    pub async fn flush(&self, pool: &PgPool) -> Result<usize, AuthError> {
        let window = self.take();
        if window.is_empty() {
            return Ok(0);
        }
        match write(pool, &window).await {
            Ok(()) => Ok(window.len()),
            Err(error) => {
                self.restore(window);
                Err(error)
            }
        }
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

async fn write(pool: &PgPool, window: &HashMap<(Uuid, String), Usage>) -> Result<(), AuthError> {
    let mut last_used: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for ((connection, _), usage) in window {
        let entry = last_used.entry(*connection).or_insert(usage.last);
        *entry = (*entry).max(usage.last);
    }
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = last_used.into_iter().unzip();
    let mut events: Vec<AuditEvent> = window
        .values()
        .map(|usage| {
            usage
                .event
                .build(EventKind::TokenLeased, usage.last)
                .payload(serde_json::json!({
                    "lease_count": usage.count,
                    "first_used_at": usage.first.to_rfc3339(),
                    "last_used_at": usage.last.to_rfc3339(),
                    "purposes": usage.purposes,
                }))
                .build()
        })
        .collect();
    events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE connections c SET last_used_at = GREATEST(COALESCE(c.last_used_at, u.at), u.at) \
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) WHERE c.connection_id = u.id",
    )
    .bind(&ids)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    for event in events {
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(())
}
