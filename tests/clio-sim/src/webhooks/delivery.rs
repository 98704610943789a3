//! Sending: each subscription's task takes its queue in order, running the handshake
//! and the deliveries with their retries.
//!
//! Retry waits run on real time (`WebhookConfig::retry_delays`), like rate-limit
//! windows: tests shorten them instead of advancing the clock. Expiry is judged on the
//! simulated clock, before every attempt.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;
use tokio::sync::mpsc;

use super::model::WebhookStatus;
use super::subscription::HandshakeOutcome;
use super::view::{DeliveryAttempt, DeliveryKind, DeliveryState, WebhookDelivery};
use super::{Hub, Registry};

const SECRET_HEADER: &str = "x-hook-secret";
const SIGNATURE_HEADER: &str = "x-hook-signature";

/// Work for a subscription's task.
#[derive(Debug)]
pub(super) enum Job {
    /// Send the handshake of this generation of the subscription (its URL and secret).
    Handshake { generation: u64 },
    /// Send this delivery.
    Send(u64),
}

/// A copy of `original` to be sent afresh: same URL, body and signature, no attempts.
pub(super) fn fresh(original: WebhookDelivery, now: DateTime<Utc>) -> WebhookDelivery {
    WebhookDelivery {
        id: 0,
        state: DeliveryState::Queued,
        attempts: Vec::new(),
        failure: None,
        created_at: now,
        ..original
    }
}

/// One subscription's task: its jobs in order until its queue is dropped (the
/// subscription was deleted) or the simulator stops.
pub(super) async fn run(hub: Arc<Hub>, webhook_id: i64, mut jobs: mpsc::UnboundedReceiver<Job>) {
    loop {
        let job = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let work = async {
            match job {
                Job::Handshake { generation } => hub.handshake(webhook_id, generation).await,
                Job::Send(id) => hub.send(id).await,
            }
        };
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = work => {}
        }
    }
}

/// What the receiver did with one request.
enum Answer {
    Taken(u16),
    /// 410 Gone: the receiver wants no more; Clio disables the webhook.
    Gone,
    Refused(u16),
    Unreachable(String),
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Taken(status) | Answer::Refused(status) => Some(*status),
            Answer::Gone => Some(410),
            Answer::Unreachable(_) => None,
        }
    }
}

/// Why a request got no answer, without the URL (reqwest's text would repeat it).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "no answer in time".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

/// What to do about a delivery right now.
enum Next {
    Send {
        url: String,
        body: String,
        signature: Option<String>,
        retry_delays: Vec<Duration>,
    },
    Abandon(&'static str),
}

impl Hub {
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                // A redirect is an answer (Clio takes 3xx as delivered), never followed.
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.shared.config.webhooks.delivery_timeout)
                .build()
                .unwrap_or_default()
        })
    }

    /// The handshake: the secret in `X-Hook-Secret`; the receiver enables the webhook by
    /// answering 2xx with the same header.
    pub(super) async fn handshake(&self, webhook_id: i64, generation: u64) {
        let target = {
            let registry = self.lock();
            registry
                .subscriptions
                .get(&webhook_id)
                .filter(|subscription| subscription.generation == generation)
                .map(|subscription| (subscription.url.clone(), subscription.secret.clone()))
        };
        let Some((url, secret)) = target else {
            return;
        };
        let body = json!({"data": {"webhook_id": webhook_id}}).to_string();
        let answer = self
            .http()
            .post(&url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(SECRET_HEADER, secret.expose())
            .body(body)
            .send()
            .await;
        let outcome = match answer {
            Ok(response) => {
                let status = response.status();
                let echoed = status.is_success()
                    && response
                        .headers()
                        .get(SECRET_HEADER)
                        .is_some_and(|value| secret.matches(value.as_bytes()));
                HandshakeOutcome {
                    status: Some(status.as_u16()),
                    echoed,
                    error: None,
                }
            }
            Err(error) => HandshakeOutcome {
                status: None,
                echoed: false,
                error: Some(describe(&error)),
            },
        };
        tracing::debug!(
            webhook_id,
            status = ?outcome.status,
            echoed = outcome.echoed,
            "webhook handshake answered"
        );
        let now = self.shared.clock.now();
        let mut registry = self.lock();
        let Some(subscription) = registry
            .subscriptions
            .get_mut(&webhook_id)
            .filter(|subscription| subscription.generation == generation)
        else {
            return;
        };
        if outcome.echoed && subscription.status == WebhookStatus::Pending {
            subscription.status = WebhookStatus::Enabled;
            subscription.version += 1;
            subscription.updated_at = now;
        }
        subscription.handshake = Some(outcome);
    }

    /// Sends one delivery: an event with its retries, anything else once.
    pub(super) async fn send(&self, id: u64) {
        let mut attempt = 0;
        loop {
            let (url, body, signature, retry_delays) = match self.next(id) {
                Next::Send {
                    url,
                    body,
                    signature,
                    retry_delays,
                } => (url, body, signature, retry_delays),
                Next::Abandon(why) => {
                    self.lock().fail(id, why);
                    return;
                }
            };
            let answer = self.post(&url, body, signature).await;
            let at = self.shared.clock.now();
            let retry = retry_delays.get(attempt).copied();
            if !self.record(id, at, answer, retry.is_some()) {
                return;
            }
            let Some(wait) = retry else {
                return;
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Whether and where to send delivery `id` now. An event goes only to an enabled,
    /// unexpired subscription (with the URL it has now); the fault and admin kinds are
    /// sent whatever the subscription's state, as an attacker's copies would be.
    fn next(&self, id: u64) -> Next {
        let now = self.shared.clock.now();
        let registry = self.lock();
        let Some(delivery) = registry.deliveries.get(&id) else {
            return Next::Abandon("the delivery is gone");
        };
        if delivery.kind != DeliveryKind::Event {
            return Next::Send {
                url: delivery.url.clone(),
                body: delivery.body.clone(),
                signature: delivery.signature.clone(),
                retry_delays: Vec::new(),
            };
        }
        let Some(subscription) = registry.subscriptions.get(&delivery.webhook_id) else {
            return Next::Abandon("the webhook was deleted");
        };
        if subscription.expired(now) {
            return Next::Abandon("the webhook expired");
        }
        match subscription.status {
            WebhookStatus::Enabled => Next::Send {
                url: subscription.url.clone(),
                body: delivery.body.clone(),
                signature: delivery.signature.clone(),
                retry_delays: self.shared.config.webhooks.retry_delays.clone(),
            },
            WebhookStatus::Pending => Next::Abandon("the webhook is waiting for its handshake"),
            WebhookStatus::Suspended => Next::Abandon("the webhook is suspended"),
        }
    }

    async fn post(&self, url: &str, body: String, signature: Option<String>) -> Answer {
        let mut request = self
            .http()
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                // Read the answer out, so the connection can be reused.
                let _ = response.bytes().await;
                match status.as_u16() {
                    200..=399 => Answer::Taken(status.as_u16()),
                    410 => Answer::Gone,
                    other => Answer::Refused(other),
                }
            }
            Err(error) => Answer::Unreachable(describe(&error)),
        }
    }

    /// Files an attempt's answer. Returns whether to try again (after the next wait).
    fn record(&self, id: u64, at: DateTime<Utc>, answer: Answer, may_retry: bool) -> bool {
        let mut registry = self.lock();
        let Some(delivery) = registry.deliveries.get_mut(&id) else {
            return false;
        };
        let error = match &answer {
            Answer::Unreachable(error) => Some(error.clone()),
            _ => None,
        };
        delivery.attempts.push(DeliveryAttempt {
            at,
            status: answer.status(),
            error,
        });
        let genuine = delivery.kind == DeliveryKind::Event;
        let webhook_id = delivery.webhook_id;
        tracing::debug!(
            delivery = id,
            webhook_id,
            status = ?answer.status(),
            "webhook delivery attempted"
        );
        match answer {
            Answer::Taken(_) => {
                delivery.state = DeliveryState::Delivered;
                if genuine {
                    registry.taken(webhook_id);
                }
                false
            }
            Answer::Gone => {
                delivery.state = DeliveryState::Failed;
                delivery.failure = Some("the receiver answered 410 Gone".to_owned());
                if genuine {
                    registry.suspend(webhook_id);
                }
                false
            }
            Answer::Refused(_) | Answer::Unreachable(_) if may_retry => true,
            Answer::Refused(_) | Answer::Unreachable(_) => {
                delivery.state = DeliveryState::Failed;
                delivery.failure = Some("every attempt failed".to_owned());
                if genuine {
                    let limit = self.shared.config.webhooks.suspend_after_failures;
                    registry.failed(webhook_id, limit);
                }
                false
            }
        }
    }
}

impl Registry {
    fn taken(&mut self, webhook_id: i64) {
        if let Some(subscription) = self.subscriptions.get_mut(&webhook_id) {
            subscription.consecutive_failures = 0;
        }
    }

    fn suspend(&mut self, webhook_id: i64) {
        if let Some(subscription) = self.subscriptions.get_mut(&webhook_id) {
            subscription.status = WebhookStatus::Suspended;
            subscription.version += 1;
        }
    }

    /// One more delivery failed every attempt; `limit` in a row suspends the webhook.
    fn failed(&mut self, webhook_id: i64, limit: u32) {
        let Some(subscription) = self.subscriptions.get_mut(&webhook_id) else {
            return;
        };
        subscription.consecutive_failures += 1;
        if limit > 0 && subscription.consecutive_failures >= limit {
            subscription.status = WebhookStatus::Suspended;
            subscription.version += 1;
        }
    }
}
