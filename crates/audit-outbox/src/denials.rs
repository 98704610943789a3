//! Refused calls as audit events: the design asks that denials are "themselves audited",
//! so every service records each `UNAUTHENTICATED`/`PERMISSION_DENIED` answer as an
//! ACCESS_DENIED event of its platform tenant. Producers write them through the outbox
//! ([`OutboxDenials`]); audit-svc appends the same [`denial_event`] to its own log.

use chrono::{DateTime, Utc};
use proto::audit_limits::MAX_TEXT_BYTES;
use proto::common::v1::{Actor, AuditEvent, EventKind, Subject, actor, subject};
use service_runtime::caller_auth::{Denial, DenialSink};
use service_runtime::clock::SharedClock;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::Waker;

/// How many denials may wait to be written before new ones are only logged.
const DENIAL_QUEUE: usize = 1_024;

/// The ACCESS_DENIED event of one refused call, recorded by the service `source`: the
/// caller (or `unauthenticated`) as the actor, the RPC as the subject, the refusal as the
/// reason. The path is whatever the caller sent; [`crate::fit_to_limits`] (which
/// [`crate::enqueue`] applies) makes a hostile one storable.
pub fn denial_event(denial: &Denial, source: &str, tenant: &str, at: DateTime<Utc>) -> AuditEvent {
    let caller = denial
        .caller
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unauthenticated".to_owned());
    AuditEvent {
        kind: EventKind::AccessDenied as i32,
        tenant: tenant.to_owned(),
        actor: Some(Actor {
            kind: actor::Kind::Service as i32,
            id: caller,
        }),
        subject: Some(Subject {
            kind: subject::Kind::Rpc as i32,
            id: denial.method.clone(),
        }),
        reason: denial.reason.clone(),
        occurred_at: Some(proto::time::timestamp(at)),
        payload_json: serde_json::json!({
            "method": crate::fit::fit_text(&denial.method, MAX_TEXT_BYTES),
            "code": format!("{:?}", denial.code),
        })
        .to_string(),
        source: source.to_owned(),
        ..AuditEvent::default()
    }
}

/// Records every refused call through the outbox. The caller-auth layer calls it
/// synchronously, so denials are queued to a writer task; a flood beyond the queue is
/// logged, not allowed to pile up in memory.
pub struct OutboxDenials {
    queue: mpsc::Sender<Denial>,
}

impl OutboxDenials {
    /// Records the denials of the service `source` (`auth-svc`) as events of `tenant`.
    pub fn start(
        pool: PgPool,
        source: &'static str,
        tenant: String,
        waker: Option<Waker>,
        clock: SharedClock,
    ) -> OutboxDenials {
        let (queue, mut receiver) = mpsc::channel::<Denial>(DENIAL_QUEUE);
        tokio::spawn(async move {
            while let Some(denial) = receiver.recv().await {
                let event = denial_event(&denial, source, &tenant, clock.now());
                let written = async {
                    let mut tx = pool.begin().await?;
                    crate::enqueue(&mut tx, event).await?;
                    tx.commit().await?;
                    Ok::<(), crate::OutboxError>(())
                }
                .await;
                match written {
                    Ok(()) => {
                        if let Some(waker) = &waker {
                            waker.wake();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, method = %denial.method, "cannot record a denied call");
                    }
                }
            }
        });
        OutboxDenials { queue }
    }
}

impl DenialSink for OutboxDenials {
    fn denied(&self, denial: Denial) {
        denial.log();
        if self.queue.try_send(denial).is_err() {
            tracing::warn!("denial queue full; this denial is only logged");
        }
    }
}
