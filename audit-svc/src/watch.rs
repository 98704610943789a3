//! `Watch`: new events streamed live from a cursor.
//!
//! Each watcher reads "events after my cursor" from the log, sends them, and then waits for
//! a wake-up: a Postgres notification for its tenant (sent by the append transaction on
//! commit), or the poll interval, so a notification lost while the listener reconnects
//! delays delivery but never drops an event. Because a tenant's appends commit in sequence
//! order, "after my cursor" never skips an event and never repeats one — also across a
//! restart, when the client passes the last sequence it saw.

use std::time::Duration;

use proto::common::v1 as pb;
use service_runtime::CancellationToken;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};

use crate::append::NOTIFY_CHANNEL;
use crate::query::{EventFilter, events_after};

/// Rows read per round.
const READ_BATCH: u32 = 500;

/// Fans Postgres notifications (tenants whose chains moved) out to watchers.
#[derive(Clone)]
pub struct Notifier {
    sender: broadcast::Sender<String>,
}

impl Notifier {
    /// Starts listening; the task ends with `shutdown`.
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Notifier {
        let (sender, _) = broadcast::channel(1_024);
        tokio::spawn(listen(pool, sender.clone(), shutdown));
        Notifier { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

async fn listen(pool: PgPool, sender: broadcast::Sender<String>, shutdown: CancellationToken) {
    let retry = Duration::from_secs(1);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for new events; watchers poll");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry) => continue,
                }
            }
        };
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %error, "LISTEN failed; watchers poll");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => continue,
            }
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.recv() => match received {
                    // No receivers is fine: nobody is watching.
                    Ok(notification) => { let _ = sender.send(notification.payload().to_owned()); }
                    Err(error) => {
                        tracing::warn!(error = %error, "event notifications interrupted; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// One watcher: sends events of `filter` after `cursor` into `out` until the client goes
/// away or the service stops.
pub async fn run_watcher(
    pool: PgPool,
    notifier: Notifier,
    filter: EventFilter,
    mut cursor: u64,
    poll: Duration,
    out: mpsc::Sender<Result<pb::AuditEvent, tonic::Status>>,
    shutdown: CancellationToken,
) {
    // Subscribed before the first read, so a commit between the read and the wait wakes us.
    let mut wake = notifier.subscribe();
    loop {
        match events_after(&pool, &filter, cursor, READ_BATCH).await {
            Ok(events) if !events.is_empty() => {
                let full = events.len() == READ_BATCH as usize;
                for event in events {
                    cursor = event.sequence;
                    if out.send(Ok(event.to_wire())).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %error, tenant = %filter.tenant, "watch read failed; retrying");
            }
        }
        let deadline = tokio::time::sleep(poll);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = out.closed() => return,
                () = &mut deadline => break,
                woke = wake.recv() => match woke {
                    Ok(tenant) if tenant == filter.tenant => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
