//! From a record change to deliveries: which subscriptions hear it, which events it
//! fires for each, the signed payload, and the hostile copies a fault asks for.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::delivery::{Job, fresh};
use super::model::{WebhookEvent, WebhookModel, WebhookStatus};
use super::signature::sign_with;
use super::subscription::Subscription;
use super::view::{DeliveryKind, DeliveryState, WebhookDelivery};
use super::{Hub, Registry, Webhooks, record_id_of};
use crate::faults::{FaultSet, WebhookFault};
use crate::region::RegionState;
use crate::resource::Resource;

/// A forged signature's key: anything but the shared secret.
const FORGER_KEY: &[u8] = b"not the shared secret";

/// One record's change, as the API or admin made it.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    /// The account (1-based) whose record it is.
    pub(crate) account: u32,
    pub(crate) resource: Resource,
    pub(crate) key: i64,
    /// `None`: the record was created.
    pub(crate) before: Option<&'a Value>,
    /// `None`: the record was deleted.
    pub(crate) after: Option<&'a Value>,
}

/// Queues a delivery for every enabled, unexpired subscription of the account that
/// hears this change: the subscribing user must still have a live grant to the app and
/// be allowed to see the record, as Clio delivers only what the authorizing user can see.
pub(crate) fn record_changed(state: &RegionState, change: Change<'_>) {
    let Some(model) = WebhookModel::of(change.resource) else {
        return;
    };
    let webhooks = &state.webhooks;
    let now = webhooks.now();
    let listeners: Vec<(i64, String, i64)> = webhooks
        .lock()
        .subscriptions
        .values()
        .filter(|subscription| {
            subscription.model == model
                && subscription.account == change.account
                && subscription.status == WebhookStatus::Enabled
                && !subscription.expired(now)
        })
        .map(|subscription| {
            let owner = subscription.client_id.clone();
            (subscription.id, owner, subscription.user_key)
        })
        .collect();
    for (id, client_id, user_key) in listeners {
        // Visibility is set on account 1's users (the admin API's firm).
        let hidden = change.account == 1
            && state
                .hidden_from(user_key, change.resource)
                .contains(&change.key);
        if hidden
            || !state
                .oauth
                .has_live_grant(&client_id, change.account, user_key)
        {
            continue;
        }
        webhooks.fire(id, &change, &state.faults, now);
    }
}

/// The events a change fires for one subscription.
fn events_for(subscription: &mut Subscription, change: &Change<'_>) -> Vec<WebhookEvent> {
    let hears = |event| subscription.events.contains(&event);
    let mut events = Vec::new();
    match (change.before, change.after) {
        (None, Some(_)) if hears(WebhookEvent::Created) => events.push(WebhookEvent::Created),
        (Some(_), None) if hears(WebhookEvent::Deleted) => events.push(WebhookEvent::Deleted),
        (Some(before), Some(after)) => {
            if hears(WebhookEvent::Updated) {
                // `fields` are the watched fields: an update fires when one of them
                // changed, and always for a record's first update since enabling.
                let first = subscription.updates_heard.insert(change.key);
                let watched_changed = subscription
                    .projection
                    .as_ref()
                    .is_none_or(|fields| fields.project(before) != fields.project(after));
                if first || watched_changed {
                    events.push(WebhookEvent::Updated);
                }
            }
            let status = |record: &Value| {
                record
                    .get("status")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            if subscription.model == WebhookModel::Matter
                && status(after) != status(before)
                && let Some(event) = status(after)
                    .as_deref()
                    .and_then(WebhookEvent::of_matter_status)
                && hears(event)
            {
                events.push(event);
            }
        }
        _ => {}
    }
    events
}

impl Webhooks {
    /// Queues the deliveries `change` makes for subscription `id`, with the copies a
    /// pending webhook fault asks for.
    fn fire(&self, id: i64, change: &Change<'_>, faults: &FaultSet, now: DateTime<Utc>) {
        let Some(record) = change.after.or(change.before) else {
            return;
        };
        let mut registry = self.lock();
        let Some(subscription) = registry.subscriptions.get_mut(&id) else {
            return;
        };
        let events = events_for(subscription, change);
        let data = subscription
            .projection
            .as_ref()
            .map_or(Value::Null, |fields| fields.project(record));
        let mut genuine = Vec::new();
        for event in events {
            let body = json!({
                "data": data,
                "meta": {"event": event.as_str(), "webhook_id": id},
            })
            .to_string();
            let signature = subscription.secret.sign(body.as_bytes());
            genuine.push(WebhookDelivery {
                id: 0,
                webhook_id: id,
                account: subscription.account,
                kind: DeliveryKind::Event,
                event: Some(event),
                record_id: record_id_of(record),
                copy_of: None,
                url: subscription.url.clone(),
                body,
                signature: Some(signature),
                state: DeliveryState::Queued,
                attempts: Vec::new(),
                failure: None,
                created_at: now,
            });
        }
        for delivery in genuine {
            self.hub
                .enqueue(&mut registry, delivery, faults.take_webhook_fault(), now);
        }
    }
}

impl Hub {
    /// Files and queues a genuine delivery, shaped by `fault`.
    fn enqueue(
        self: &Arc<Self>,
        registry: &mut Registry,
        delivery: WebhookDelivery,
        fault: Option<WebhookFault>,
        now: DateTime<Utc>,
    ) {
        let webhook_id = delivery.webhook_id;
        let template = delivery.clone();
        let id = registry.add(delivery);
        let copy = |kind, signature| WebhookDelivery {
            kind,
            signature,
            copy_of: Some(id),
            ..fresh(template.clone(), now)
        };
        // Forgeries arrive just before the genuine delivery they imitate.
        match fault {
            Some(WebhookFault::Unsigned) => {
                self.send_copy(registry, copy(DeliveryKind::Unsigned, None));
            }
            Some(WebhookFault::BadSignature) => {
                let signature = sign_with(FORGER_KEY, template.body.as_bytes());
                self.send_copy(registry, copy(DeliveryKind::BadSignature, Some(signature)));
            }
            Some(WebhookFault::OutOfOrder) => {
                let free = registry
                    .subscriptions
                    .get(&webhook_id)
                    .is_some_and(|subscription| subscription.held.is_none());
                if free {
                    if let Some(held) = registry.deliveries.get_mut(&id) {
                        held.state = DeliveryState::Held;
                    }
                    if let Some(subscription) = registry.subscriptions.get_mut(&webhook_id) {
                        subscription.held = Some(id);
                    }
                    return;
                }
            }
            Some(WebhookFault::Duplicate) | None => {}
        }
        self.queue(registry, webhook_id, Job::Send(id));
        if fault == Some(WebhookFault::Duplicate) {
            let signature = template.signature.clone();
            self.send_copy(registry, copy(DeliveryKind::Duplicate, signature));
        }
        // A held delivery goes after the newer one it waited for.
        let held = registry
            .subscriptions
            .get_mut(&webhook_id)
            .and_then(|subscription| subscription.held.take());
        if let Some(held) = held {
            if let Some(delivery) = registry.deliveries.get_mut(&held) {
                delivery.state = DeliveryState::Queued;
            }
            self.queue(registry, webhook_id, Job::Send(held));
        }
    }

    fn send_copy(self: &Arc<Self>, registry: &mut Registry, copy: WebhookDelivery) {
        let webhook_id = copy.webhook_id;
        let id = registry.add(copy);
        self.queue(registry, webhook_id, Job::Send(id));
    }
}
