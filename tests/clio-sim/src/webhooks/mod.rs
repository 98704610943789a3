//! Clio Manage webhooks (`docs/clio-webhooks.md`): one region's subscriptions, and the
//! background deliveries that tell their receivers when a record changed.
//!
//! A subscription belongs to one app (`client_id`) in one account, and is made through
//! the API (`api/webhooks.rs`). Creating it (or changing its URL) queues a handshake;
//! only when the receiver echoes `X-Hook-Secret` (or the app activates it) is it
//! `enabled`. Every record change (API or admin) is matched against the enabled,
//! unexpired subscriptions of its account (`changes.rs`), and each match becomes a
//! signed delivery in that subscription's queue. One task per subscription sends its
//! queue in order (`delivery.rs`), so a slow or failing receiver delays only its own
//! deliveries and never the edit that caused them.

mod changes;
mod delivery;
mod model;
mod signature;
mod subscription;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use changes::{Change, record_changed};
pub use model::{WebhookEvent, WebhookModel, WebhookStatus};
pub use subscription::HandshakeOutcome;
pub(crate) use subscription::{Draft, Owner, WEBHOOK_SCHEMA};
pub use view::{DeliveryAttempt, DeliveryKind, DeliveryState, WebhookDelivery, WebhookInfo};

use crate::api::ApiError;
use crate::config::ExpiredWebhooks;
use crate::region::Shared;
use crate::resource::RecordId;
use delivery::Job;
use subscription::Subscription;

/// Webhook ids start here, so they never look like record ids of the data set.
const FIRST_WEBHOOK_ID: i64 = 7_100_000_001;

/// One region's webhooks.
#[derive(Debug)]
pub(crate) struct Webhooks {
    hub: Arc<Hub>,
}

/// What the delivery tasks share with the API and admin handlers.
#[derive(Debug)]
struct Hub {
    shared: Arc<Shared>,
    registry: Mutex<Registry>,
    /// Built on first use: most simulator runs never deliver.
    http: OnceLock<reqwest::Client>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Debug)]
struct Registry {
    next_subscription: i64,
    subscriptions: BTreeMap<i64, Subscription>,
    next_delivery: u64,
    deliveries: BTreeMap<u64, WebhookDelivery>,
    /// Each subscription's queue, feeding its one delivery task.
    queues: HashMap<i64, mpsc::UnboundedSender<Job>>,
}

impl Webhooks {
    pub(crate) fn new(shared: Arc<Shared>) -> Webhooks {
        Webhooks {
            hub: Arc::new(Hub {
                shared,
                registry: Mutex::new(Registry {
                    next_subscription: FIRST_WEBHOOK_ID,
                    subscriptions: BTreeMap::new(),
                    next_delivery: 1,
                    deliveries: BTreeMap::new(),
                    queues: HashMap::new(),
                }),
                http: OnceLock::new(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.hub.lock()
    }

    fn now(&self) -> DateTime<Utc> {
        self.hub.shared.clock.now()
    }

    /// Stops every delivery task (the simulator is stopping).
    pub(crate) async fn stop(&self) {
        self.hub.shutdown.cancel();
        self.hub.tasks.close();
        self.hub.tasks.wait().await;
    }

    /// Cancels the delivery tasks without waiting for them.
    pub(crate) fn cancel(&self) {
        self.hub.shutdown.cancel();
    }

    /// Whether the API shows this subscription to the app's tokens in `account`.
    fn visible_to(&self, subscription: &Subscription, owner: &Owner, now: DateTime<Utc>) -> bool {
        subscription.client_id == owner.client_id
            && subscription.account == owner.account
            && (!subscription.expired(now)
                || self.hub.shared.config.webhooks.expired == ExpiredWebhooks::Listed)
    }

    /// Creates a subscription and queues its handshake; returns its record.
    pub(crate) fn create(&self, draft: Draft, owner: Owner) -> Result<Value, ApiError> {
        let now = self.now();
        let mut registry = self.lock();
        let id = registry.next_subscription;
        let subscription = draft.into_subscription(owner, id, now)?;
        let record = subscription.record();
        let generation = subscription.generation;
        registry.next_subscription += 1;
        registry.subscriptions.insert(id, subscription);
        self.hub
            .queue(&mut registry, id, Job::Handshake { generation });
        Ok(record)
    }

    /// The records of the app's visible subscriptions in the owner's account with ids
    /// above `after`, in id order, at most `limit + 1` (so the caller sees whether more
    /// follow).
    pub(crate) fn list(&self, owner: &Owner, after: Option<i64>, limit: usize) -> Vec<Value> {
        let now = self.now();
        let registry = self.lock();
        let start = after.map_or(i64::MIN, |after| after.saturating_add(1));
        registry
            .subscriptions
            .range(start..)
            .map(|(_, subscription)| subscription)
            .filter(|subscription| self.visible_to(subscription, owner, now))
            .take(limit.saturating_add(1))
            .map(Subscription::record)
            .collect()
    }

    /// Runs `change` on subscription `id` if the owner can see it (`None` if not).
    pub(crate) fn with_visible<T>(
        &self,
        owner: &Owner,
        id: i64,
        change: impl FnOnce(&mut Subscription, DateTime<Utc>) -> T,
    ) -> Option<T> {
        let now = self.now();
        let mut registry = self.lock();
        let subscription = registry.subscriptions.get_mut(&id)?;
        if !self.visible_to(subscription, owner, now) {
            return None;
        }
        Some(change(subscription, now))
    }

    /// Applies an update body; a new URL queues a new handshake. `Ok(None)`: no such
    /// subscription for this owner.
    pub(crate) fn update(
        &self,
        owner: &Owner,
        id: i64,
        if_match: Option<&str>,
        draft: Draft,
    ) -> Result<Option<Value>, ApiError> {
        let now = self.now();
        let mut registry = self.lock();
        let Some(subscription) = registry.subscriptions.get_mut(&id) else {
            return Ok(None);
        };
        if !self.visible_to(subscription, owner, now) {
            return Ok(None);
        }
        if let Some(expected) = if_match
            && !crate::api::names_etag(expected, &subscription.etag())
        {
            return Err(ApiError::precondition_failed());
        }
        let url_changed = draft.apply_to(subscription, now)?;
        let record = subscription.record();
        let generation = subscription.generation;
        if url_changed {
            self.hub
                .queue(&mut registry, id, Job::Handshake { generation });
        }
        Ok(Some(record))
    }

    /// Deletes a subscription: nothing more is delivered for it. False if the owner
    /// cannot see it.
    pub(crate) fn delete(&self, owner: &Owner, id: i64) -> bool {
        let now = self.now();
        let mut registry = self.lock();
        let visible = registry
            .subscriptions
            .get(&id)
            .is_some_and(|subscription| self.visible_to(subscription, owner, now));
        if !visible {
            return false;
        }
        if let Some(held) = registry
            .subscriptions
            .remove(&id)
            .and_then(|subscription| subscription.held)
        {
            registry.fail(held, "the webhook was deleted");
        }
        // The task sends what is queued (abandoning events of a deleted webhook) and ends.
        registry.queues.remove(&id);
        true
    }

    /// The subscriptions of `account` (all accounts when `None`), every app, expired ones
    /// included.
    pub(crate) fn infos(&self, account: Option<u32>) -> Vec<WebhookInfo> {
        let now = self.now();
        self.lock()
            .subscriptions
            .values()
            .filter(|subscription| account.is_none_or(|account| subscription.account == account))
            .map(|subscription| WebhookInfo::of(subscription, now))
            .collect()
    }

    /// Deliveries (of one subscription, or all), oldest first, and whether everything
    /// has settled: no handshake being sent and no delivery waiting to be sent or retried.
    pub(crate) fn deliveries(&self, webhook_id: Option<i64>) -> (bool, Vec<WebhookDelivery>) {
        let registry = self.lock();
        let settled = registry
            .subscriptions
            .values()
            .all(|subscription| subscription.handshake.is_some())
            && registry
                .deliveries
                .values()
                .all(|delivery| delivery.state != DeliveryState::Queued);
        let deliveries = registry
            .deliveries
            .values()
            .filter(|delivery| webhook_id.is_none_or(|id| delivery.webhook_id == id))
            .cloned()
            .collect();
        (settled, deliveries)
    }

    /// Sends an earlier delivery's exact bytes and signature again (a replay); returns
    /// the new delivery's id, `None` if there is no such delivery.
    pub(crate) fn replay(&self, delivery_id: u64) -> Option<u64> {
        let now = self.now();
        let mut registry = self.lock();
        let original = registry.deliveries.get(&delivery_id)?.clone();
        let id = registry.add(WebhookDelivery {
            kind: DeliveryKind::Replay,
            copy_of: Some(delivery_id),
            ..delivery::fresh(original, now)
        });
        let webhook_id = registry.deliveries.get(&id)?.webhook_id;
        self.hub.queue(&mut registry, webhook_id, Job::Send(id));
        Some(id)
    }

    /// Sends `body` as it is, signed with the subscription's secret, once; returns the
    /// delivery's id, `None` if there is no such subscription.
    pub(crate) fn deliver_raw(&self, webhook_id: i64, body: String) -> Option<u64> {
        let now = self.now();
        let mut registry = self.lock();
        let subscription = registry.subscriptions.get(&webhook_id)?;
        let signature = subscription.secret.sign(body.as_bytes());
        let delivery = WebhookDelivery {
            id: 0,
            webhook_id,
            account: subscription.account,
            kind: DeliveryKind::Raw,
            event: None,
            record_id: None,
            copy_of: None,
            url: subscription.url.clone(),
            body,
            signature: Some(signature),
            state: DeliveryState::Queued,
            attempts: Vec::new(),
            failure: None,
            created_at: now,
        };
        let id = registry.add(delivery);
        self.hub.queue(&mut registry, webhook_id, Job::Send(id));
        Some(id)
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `job` on the subscription's queue, starting its task if it has none.
    fn queue(self: &Arc<Self>, registry: &mut Registry, webhook_id: i64, job: Job) {
        let sender = registry.queues.entry(webhook_id).or_insert_with(|| {
            let (sender, jobs) = mpsc::unbounded_channel();
            self.tasks
                .spawn(delivery::run(self.clone(), webhook_id, jobs));
            sender
        });
        if let Err(mpsc::error::SendError(Job::Send(id))) = sender.send(job) {
            // Only after shutdown: the task is gone.
            registry.fail(id, "the simulator is stopping");
        }
    }
}

impl Registry {
    /// Files a delivery under the next id; returns the id.
    fn add(&mut self, mut delivery: WebhookDelivery) -> u64 {
        let id = self.next_delivery;
        self.next_delivery += 1;
        delivery.id = id;
        self.deliveries.insert(id, delivery);
        id
    }

    fn fail(&mut self, id: u64, why: &str) {
        if let Some(delivery) = self.deliveries.get_mut(&id) {
            delivery.state = DeliveryState::Failed;
            delivery.failure = Some(why.to_owned());
        }
    }
}

/// The record id of a delivery's record, for the admin view.
fn record_id_of(record: &Value) -> Option<RecordId> {
    record.get("id").map(RecordId::from)
}
