//! audit-svc's own refused calls, appended straight to its log as ACCESS_DENIED events of
//! the platform tenant (the producers send theirs through the outbox; the event is the
//! same, built by `audit_outbox::denial_event`).

use service_runtime::caller_auth::{Denial, DenialSink};
use service_runtime::clock::SharedClock;
use tokio::sync::mpsc;

use crate::append::Appender;
use crate::validation;

/// `source` and `writer` of the denials this service records itself.
pub const SOURCE: &str = "audit-svc";

/// How many denials may wait to be appended before new ones are only logged.
const DENIAL_QUEUE: usize = 1_024;

pub struct AppendDenials {
    queue: mpsc::Sender<Denial>,
}

impl AppendDenials {
    pub fn start(appender: Appender, tenant: String, clock: SharedClock) -> AppendDenials {
        let (queue, mut receiver) = mpsc::channel::<Denial>(DENIAL_QUEUE);
        tokio::spawn(async move {
            while let Some(denial) = receiver.recv().await {
                let mut event = audit_outbox::denial_event(&denial, SOURCE, &tenant, clock.now());
                event.event_id = uuid::Uuid::now_v7().to_string();
                // The same fitting the producers' outboxes do: a refused call with a 10 KB
                // method path is still recorded (its path as a digest), never dropped.
                audit_outbox::fit_to_limits(&mut event);
                let appended = match validation::event("denial", &event) {
                    Ok(mut body) => {
                        body.writer = SOURCE.to_owned();
                        appender.append(&[body]).await.map(|_| ())
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = appended {
                    tracing::warn!(%error, method = %denial.method, "cannot record a denied call");
                }
            }
        });
        AppendDenials { queue }
    }
}

impl DenialSink for AppendDenials {
    fn denied(&self, denial: Denial) {
        denial.log();
        if self.queue.try_send(denial).is_err() {
            tracing::warn!("denial queue full; this denial is only logged");
        }
    }
}
