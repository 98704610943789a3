//! Subscriptions and deliveries as the admin API shows them to tests: everything a test
//! asserts on, and never a shared secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::{WebhookEvent, WebhookModel, WebhookStatus};
use super::subscription::{HandshakeOutcome, Subscription};
use crate::resource::RecordId;

/// A subscription (admin `GET /__sim/webhooks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookInfo {
    pub id: i64,
    /// The app whose token created it.
    pub client_id: String,
    /// The Clio account (1-based) whose changes it hears.
    pub account: u32,
    pub url: String,
    pub model: WebhookModel,
    pub events: Vec<WebhookEvent>,
    pub fields: String,
    pub status: WebhookStatus,
    pub expires_at: DateTime<Utc>,
    /// `expires_at` has passed on the simulated clock: it delivers nothing (and, with
    /// `ExpiredWebhooks::Removed`, the API no longer shows it).
    pub expired: bool,
    pub created_at: DateTime<Utc>,
    /// The latest handshake's answer; `None` while it is being sent.
    pub handshake: Option<HandshakeOutcome>,
    /// Deliveries in a row that failed every attempt (reset by a taken one).
    pub consecutive_failures: u32,
}

impl WebhookInfo {
    pub(crate) fn of(subscription: &Subscription, now: DateTime<Utc>) -> WebhookInfo {
        WebhookInfo {
            id: subscription.id,
            client_id: subscription.client_id.clone(),
            account: subscription.account,
            url: subscription.url.clone(),
            model: subscription.model,
            events: subscription.events.clone(),
            fields: subscription.fields.clone(),
            status: subscription.status,
            expires_at: subscription.expires_at,
            expired: subscription.expired(now),
            created_at: subscription.created_at,
            handshake: subscription.handshake.clone(),
            consecutive_failures: subscription.consecutive_failures,
        }
    }
}

/// What a delivery request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// A record changed: signed, retried until taken or out of attempts.
    Event,
    /// Fault `webhook_unsigned`: a forged copy of the next event without
    /// `X-Hook-Signature`, sent once just before the genuine one.
    Unsigned,
    /// Fault `webhook_bad_signature`: a copy signed with a key that is not the shared
    /// secret, sent once just before the genuine one.
    BadSignature,
    /// Fault `webhook_duplicate`: the genuine delivery's bytes and signature sent once more
    /// right after it.
    Duplicate,
    /// Admin replay: an earlier delivery's bytes and signature sent again, once.
    Replay,
    /// Admin raw delivery: a body the test chose, correctly signed, sent once.
    Raw,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its turn, being sent, or waiting to be retried.
    Queued,
    /// Held back by an `out_of_order` fault until the subscription's next delivery is
    /// sent.
    Held,
    /// The receiver took it (2xx or 3xx).
    Delivered,
    /// Out of attempts, refused with 410, or abandoned (see `failure`).
    Failed,
}

/// One request of a delivery and what the receiver answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it was sent, on the simulated clock.
    pub at: DateTime<Utc>,
    /// The receiver's status; `None` when it could not be reached or did not answer in
    /// time.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One delivery (admin `GET /__sim/webhooks/deliveries`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The simulator's own number for it. Clio sends no delivery id, and neither does
    /// the simulator: a receiver tells duplicates apart by the body.
    pub id: u64,
    pub webhook_id: i64,
    pub account: u32,
    pub kind: DeliveryKind,
    /// `meta.event` (`None` for a raw body).
    pub event: Option<WebhookEvent>,
    /// The changed record's id (`None` for a raw body).
    pub record_id: Option<RecordId>,
    /// The delivery a fault or replay copied.
    pub copy_of: Option<u64>,
    pub url: String,
    /// The exact body sent.
    pub body: String,
    /// The `X-Hook-Signature` sent (`None`: the header was left out).
    pub signature: Option<String>,
    pub state: DeliveryState,
    pub attempts: Vec<DeliveryAttempt>,
    /// Why it failed, once it has.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl WebhookDelivery {
    /// The receiver's status codes, attempt by attempt (`None` where it was unreachable).
    pub fn statuses(&self) -> Vec<Option<u16>> {
        self.attempts.iter().map(|attempt| attempt.status).collect()
    }
}
