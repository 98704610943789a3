//! Subscriptions at Clio: made, renewed, removed, and their gaps closed.
//!
//! - **Enable** (`EnableWebhooks`): for each resource, a pending row with a random path
//!   token is stored first (Clio's handshake may arrive before its answer to the create),
//!   then the subscription is created at Clio with the importer's fields for the resource,
//!   so a delivery carries the whole record. Needs `webhooks:write` and the resource's read
//!   scope on the grant (leased like any job's token).
//! - **Upkeep** (every `webhooks.upkeep_interval_ms`):
//!   - a subscription expiring within `renew_before_secs` is renewed for another
//!     `lifetime_days`; one Clio no longer has (expired, removed by hand) is recreated and
//!     an incremental import of its resource closes the gap;
//!   - a pending subscription whose handshake never came within a renewal period is
//!     recreated the same way;
//!   - the subscriptions of a connection auth-svc reports revoked (or unknown) are removed:
//!     its token no longer works at Clio, which stops delivering to a revoked grant;
//!   - deliveries older than the replay window are forgotten.
//! - **Catch-up** (at start, `catch_up_on_start`): an incremental import of every
//!   subscribed connection's resources, for changes made while import-svc was down and
//!   Clio gave up delivering.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use clio_api::webhooks::NewSubscription;
use clio_api::{ClioError, Credentials, RateGates, WebhookClient};
use proto::imports::v1 as pb;
use proto::queue::{JOB_ROUTING_KEY, content_type};
use ring::rand::{SecureRandom, SystemRandom};
use scope_catalog::{Resource, Scope};
use service_runtime::clock::SharedClock;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{self, WEBHOOKS_SCOPE};
use super::store::{self, NewRow, SubscriptionRow};
use super::{WebhooksConfig, model_of, sha256};
use crate::audit::{Auditor, SOURCE};
use crate::job::listing::default_fields;
use crate::job::spec::{Mode, Priority};
use crate::job::{spec, store as jobs};
use crate::leases::{Lease, LeaseError, Leases};
use crate::queue::publisher::{Outgoing, Publisher};
use crate::queue::topology::Topology;

/// How long a subscription may wait for Clio's handshake before it is made again.
const HANDSHAKE_GRACE: chrono::Duration = chrono::Duration::minutes(10);

/// Events every subscription asks for (matters add their status events by themselves).
const EVENTS: &[&str] = &["created", "updated", "deleted"];

/// Why a subscription could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The connection or its grant does not allow it (revoked, a scope missing, Clio
    /// refused the subscription).
    #[error("{0}")]
    Refused(String),
    /// auth-svc, Clio or Postgres could not answer now.
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for WebhookError {
    fn from(error: sqlx::Error) -> Self {
        WebhookError::Unavailable(format!("database unavailable: {error}"))
    }
}

impl From<crate::audit::RecordError> for WebhookError {
    fn from(error: crate::audit::RecordError) -> Self {
        WebhookError::Unavailable(format!("cannot record the audit event: {error}"))
    }
}

impl From<LeaseError> for WebhookError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Refused(reason) | LeaseError::Unusable(reason) => {
                WebhookError::Refused(reason)
            }
            LeaseError::Unavailable(reason) => WebhookError::Unavailable(reason),
        }
    }
}

fn from_clio(error: ClioError) -> WebhookError {
    match error {
        ClioError::Transient { .. }
        | ClioError::RateLimited { .. }
        | ClioError::Exhausted { .. } => WebhookError::Unavailable(format!("Clio: {error}")),
        other => WebhookError::Refused(format!("Clio: {other}")),
    }
}

impl From<WebhookError> for tonic::Status {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Invalid { .. } => tonic::Status::invalid_argument(error.to_string()),
            WebhookError::Refused(reason) => tonic::Status::failed_precondition(reason),
            WebhookError::Unavailable(reason) => tonic::Status::unavailable(reason),
        }
    }
}

/// Everything subscriptions need. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    pub pool: PgPool,
    pub leases: Leases,
    pub client: WebhookClient,
    pub gates: RateGates,
    pub reserve: u32,
    pub audit: Auditor,
    pub config: Arc<WebhooksConfig>,
    /// Where Clio delivers: `<base>/clio/webhooks/<path token>`.
    pub base_url: String,
    pub clock: SharedClock,
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    /// What this process noticed between upkeep rounds.
    pub watch: Arc<Watch>,
}

/// Gaps suspected by the receiver and the subscriptions checked at Clio lately.
#[derive(Default)]
pub struct Watch {
    gaps: Mutex<Gaps>,
    verified: Mutex<HashMap<Uuid, std::time::Instant>>,
}

#[derive(Default)]
struct Gaps {
    subscriptions: HashSet<Uuid>,
    /// A request could not even be matched to its subscription (Postgres down).
    everyone: bool,
}

/// What an upkeep round does with one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Renew,
    Verify,
    Gone,
}

impl Webhooks {
    /// The resources of a request, checked: known, with webhooks, no duplicates.
    pub fn resources(names: &[String], field: &str) -> Result<Vec<Resource>, WebhookError> {
        let mut resources = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let invalid = |problem: String| WebhookError::Invalid {
                field: format!("{field}[{i}]"),
                problem,
            };
            let resource: Resource = name
                .parse()
                .map_err(|_| invalid(format!("{} is not a resource", spec::printable(name, 64))))?;
            if model_of(resource).is_none() {
                return Err(invalid(format!("Clio sends no webhooks for {resource}")));
            }
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        Ok(resources)
    }

    /// Subscribes `connection_id` to each resource that has no live subscription yet.
    /// Returns the connection's subscriptions.
    pub async fn enable(
        &self,
        by: &str,
        connection_id: &str,
        resources: &[Resource],
    ) -> Result<Vec<SubscriptionRow>, WebhookError> {
        if resources.is_empty() {
            return Err(WebhookError::Invalid {
                field: "resources".into(),
                problem: "name at least one resource".into(),
            });
        }
        let connection = self.leases.connection(connection_id).await?;
        connection.usable.clone().map_err(WebhookError::Refused)?;
        let mut scopes: Vec<Scope> = vec![WEBHOOKS_SCOPE];
        scopes.extend(resources.iter().map(|r| r.required_scope()));
        let lease = self
            .leases
            .lease(connection_id, &scopes, "webhook subscription", false)
            .await?;
        for resource in resources {
            self.subscribe(by, &connection, connection_id, *resource, &lease)
                .await?;
        }
        Ok(store::of_connection(&self.pool, connection_id).await?)
    }

    async fn subscribe(
        &self,
        by: &str,
        connection: &crate::leases::ConnectionInfo,
        connection_id: &str,
        resource: Resource,
        lease: &Lease,
    ) -> Result<(), WebhookError> {
        let subscription_id = Uuid::now_v7();
        let token = path_token()?;
        let inserted = store::insert_pending(
            &self.pool,
            &NewRow {
                subscription_id,
                connection_id,
                resource: resource.as_str(),
                tenant: &connection.tenant,
                clio_account_id: &lease.account_id,
                principal: &connection.principal,
                path_token_sha256: &sha256(token.as_bytes()),
                enabled_by: by,
            },
        )
        .await?;
        if !inserted {
            // Already subscribed: enabling again changes nothing.
            return Ok(());
        }
        let url = format!(
            "{}/clio/webhooks/{token}",
            self.base_url.trim_end_matches('/')
        );
        let fields = default_fields(resource).join(",");
        let gate = self.gates.gate(connection_id);
        let created = self
            .client
            .create(
                &self.credentials(lease, &gate),
                &NewSubscription {
                    url: &url,
                    model: model_of(resource).unwrap_or_default(),
                    fields: &fields,
                    events: EVENTS,
                    expires_at: self.clock.now() + self.config.lifetime(),
                },
            )
            .await;
        let created = match created {
            Ok(created) => created,
            Err(error) => {
                let error = from_clio(error);
                // Nothing was made at Clio: the row goes, so enabling can be tried again.
                store::mark_removed(
                    &self.pool,
                    subscription_id,
                    &format!("not created: {error}"),
                )
                .await?;
                return Err(error);
            }
        };
        let mut tx = self.pool.begin().await?;
        store::set_at_clio(
            &mut *tx,
            subscription_id,
            created.id,
            created.expires_at,
            false,
        )
        .await?;
        let row = store::get(&mut *tx, subscription_id)
            .await?
            .ok_or_else(|| WebhookError::Unavailable("the subscription vanished".into()))?;
        self.audit
            .enqueue_event(&mut tx, events::subscribed(&row, by))
            .await?;
        tx.commit().await?;
        self.audit.committed();
        tracing::info!(%connection_id, %resource, clio_webhook_id = created.id, "subscribed to Clio webhooks");
        Ok(())
    }

    /// Removes the connection's live subscriptions of `resources` (all when empty): at
    /// Clio when its token still works, and here in any case.
    pub async fn disable(
        &self,
        by: &str,
        connection_id: &str,
        resources: &[Resource],
        reason: &str,
    ) -> Result<Vec<SubscriptionRow>, WebhookError> {
        let rows: Vec<SubscriptionRow> = store::of_connection(&self.pool, connection_id)
            .await?
            .into_iter()
            .filter(|row| row.is_live())
            .filter(|row| {
                resources.is_empty() || resources.iter().any(|r| r.as_str() == row.resource)
            })
            .collect();
        let lease = match rows.is_empty() {
            true => None,
            false => self
                .leases
                .lease(connection_id, &[WEBHOOKS_SCOPE], "webhook removal", false)
                .await
                .ok(),
        };
        for row in &rows {
            if let (Some(lease), Some(clio_id)) = (&lease, row.clio_webhook_id) {
                let gate = self.gates.gate(connection_id);
                self.client
                    .delete(&self.credentials(lease, &gate), clio_id)
                    .await
                    .map_err(from_clio)?;
            }
            self.remove(row, by, reason).await?;
        }
        Ok(store::of_connection(&self.pool, connection_id).await?)
    }

    /// Marks one subscription removed, with its audit event.
    async fn remove(
        &self,
        row: &SubscriptionRow,
        by: &str,
        reason: &str,
    ) -> Result<(), WebhookError> {
        let mut tx = self.pool.begin().await?;
        if store::mark_removed(&mut *tx, row.subscription_id, reason).await? {
            self.audit
                .enqueue_event(&mut tx, events::removed(row, by, reason))
                .await?;
        }
        tx.commit().await?;
        self.audit.committed();
        tracing::info!(connection_id = %row.connection_id, resource = %row.resource, %reason, "webhook subscription removed");
        Ok(())
    }

    fn credentials<'a>(&self, lease: &'a Lease, gate: &'a clio_api::RateGate) -> Credentials<'a> {
        Credentials {
            api_base: &lease.api_base,
            token: &lease.token,
            gate,
            budget: lease.budget(),
            reserve: self.reserve,
        }
    }

    /// Renewals, revocations and pruning, every upkeep interval, until `stop`; a catch-up
    /// first when configured.
    pub async fn run_upkeep(self, stop: CancellationToken) {
        // Until it succeeds (the broker may not be reachable yet at start).
        let mut catch_up = self.config.catch_up_on_start;
        let mut interval = tokio::time::interval(self.config.upkeep_interval());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = interval.tick() => {}
            }
            if catch_up {
                match self.catch_up("catching up after a restart").await {
                    Ok(()) => catch_up = false,
                    Err(error) => tracing::warn!(%error, "webhook catch-up failed; trying again"),
                }
            }
            if let Err(error) = self.upkeep().await {
                tracing::warn!(%error, "webhook upkeep round failed");
            }
        }
    }

    /// One upkeep round.
    pub async fn upkeep(&self) -> Result<(), WebhookError> {
        self.close_gaps().await;
        let live = store::live(&self.pool).await?;
        let mut revoked: Vec<String> = Vec::new();
        let mut checked: Vec<String> = Vec::new();
        for row in &live {
            if !checked.contains(&row.connection_id) {
                checked.push(row.connection_id.clone());
                match self.leases.connection(&row.connection_id).await {
                    Ok(connection) if connection.usable.is_ok() => {}
                    Ok(connection) => {
                        let why = connection.usable.err().unwrap_or_default();
                        revoked.push(row.connection_id.clone());
                        tracing::info!(connection_id = %row.connection_id, %why, "removing the webhooks of an unusable connection");
                    }
                    Err(LeaseError::Refused(_)) => revoked.push(row.connection_id.clone()),
                    Err(LeaseError::Unusable(_)) => revoked.push(row.connection_id.clone()),
                    Err(LeaseError::Unavailable(_)) => {}
                }
            }
            if revoked.contains(&row.connection_id) {
                self.remove(
                    row,
                    SOURCE,
                    "the connection was revoked or can no longer be used",
                )
                .await?;
                continue;
            }
            if let Err(error) = self.keep_alive(row).await {
                tracing::warn!(connection_id = %row.connection_id, resource = %row.resource, %error, "cannot renew a webhook subscription");
            }
        }
        store::prune_seen(&self.pool, self.config.replay_window_secs).await?;
        Ok(())
    }

    /// Renews `row` when it expires soon, and otherwise checks now and then that Clio
    /// still delivers it; recreates it (and closes the gap) when Clio no longer has it,
    /// suspended it, or its handshake never came.
    async fn keep_alive(&self, row: &SubscriptionRow) -> Result<(), WebhookError> {
        let now = self.clock.now();
        let check = match row.status.as_str() {
            // Being made, or waiting for Clio's handshake: only one that never came is
            // made again (a round may read a row its enable has not finished).
            "pending" if chrono::Utc::now() - row.created_at > HANDSHAKE_GRACE => Check::Gone,
            "pending" => return Ok(()),
            _ if row
                .expires_at
                .is_none_or(|at| at - now < self.config.renew_before()) =>
            {
                Check::Renew
            }
            _ if self.verification_due(row.subscription_id) => Check::Verify,
            _ => return Ok(()),
        };
        let resource: Resource = row
            .resource
            .parse()
            .map_err(|_| WebhookError::Refused(format!("unknown resource {}", row.resource)))?;
        let lease = self
            .leases
            .lease(
                &row.connection_id,
                &[WEBHOOKS_SCOPE, resource.required_scope()],
                "webhook upkeep",
                false,
            )
            .await?;
        let gate = self.gates.gate(&row.connection_id);
        let credentials = self.credentials(&lease, &gate);
        let at_clio = match (check, row.clio_webhook_id) {
            (Check::Renew, Some(clio_id)) => self
                .client
                .renew(&credentials, clio_id, now + self.config.lifetime())
                .await
                .map_err(from_clio)?,
            (Check::Verify, Some(clio_id)) => self
                .client
                .get(&credentials, clio_id)
                .await
                .map_err(from_clio)?,
            _ => None,
        };
        match at_clio {
            Some(at_clio) if at_clio.status != "suspended" => {
                self.verified(row.subscription_id);
                if check == Check::Renew {
                    self.record_renewal(row, &at_clio).await?;
                }
                Ok(())
            }
            gone => {
                let why = match gone {
                    Some(_) => "Clio suspended the subscription",
                    None if row.status == "pending" => "Clio's handshake never came",
                    None => "Clio no longer has the subscription",
                };
                if let (Some(_), Some(clio_id)) = (&gone, row.clio_webhook_id) {
                    // Suspended: delete it so only the new one delivers.
                    let _ = self.client.delete(&credentials, clio_id).await;
                }
                self.remove(row, SOURCE, why).await?;
                let connection = self.leases.connection(&row.connection_id).await?;
                self.subscribe(
                    &row.enabled_by,
                    &connection,
                    &row.connection_id,
                    resource,
                    &lease,
                )
                .await?;
                self.queue_incremental(&row.connection_id, &[resource], why)
                    .await
            }
        }
    }

    async fn record_renewal(
        &self,
        row: &SubscriptionRow,
        renewed: &clio_api::Subscription,
    ) -> Result<(), WebhookError> {
        let mut tx = self.pool.begin().await?;
        store::set_at_clio(
            &mut *tx,
            row.subscription_id,
            renewed.id,
            renewed.expires_at,
            true,
        )
        .await?;
        self.audit
            .enqueue_event(&mut tx, events::renewed(row, renewed.expires_at))
            .await?;
        tx.commit().await?;
        self.audit.committed();
        tracing::info!(connection_id = %row.connection_id, resource = %row.resource, "webhook subscription renewed");
        Ok(())
    }

    /// Whether the subscription was not checked at Clio within `verify_interval_secs`
    /// (by this process: a restart checks every subscription again).
    fn verification_due(&self, subscription_id: Uuid) -> bool {
        let verified = self
            .watch
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        verified.get(&subscription_id).is_none_or(|at| {
            at.elapsed() >= std::time::Duration::from_secs(self.config.verify_interval_secs)
        })
    }

    fn verified(&self, subscription_id: Uuid) {
        self.watch
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(subscription_id, std::time::Instant::now());
    }

    /// Notes that a delivery of `subscription` (all of them: `None`) was answered "try
    /// again" because a dependency was down. Clio retries for a while and then gives up,
    /// so the next upkeep reads the subscription's resource with an incremental import.
    pub fn suspect_gap(&self, subscription: Option<Uuid>) {
        let mut gaps = self
            .watch
            .gaps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match subscription {
            Some(id) => {
                gaps.subscriptions.insert(id);
            }
            None => gaps.everyone = true,
        }
    }

    /// Queues an incremental import for every suspected gap; those that cannot be queued
    /// yet stay suspected.
    async fn close_gaps(&self) {
        let suspected = std::mem::take(
            &mut *self
                .watch
                .gaps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if suspected.everyone {
            if let Err(error) = self
                .catch_up("deliveries were refused while the database was down")
                .await
            {
                tracing::warn!(%error, "cannot close the webhooks' gap yet");
                self.suspect_gap(None);
            }
            return;
        }
        for id in suspected.subscriptions {
            let closed = async {
                let Some(row) = store::get(&self.pool, id).await? else {
                    return Ok(());
                };
                let Ok(resource) = row.resource.parse::<Resource>() else {
                    return Ok(());
                };
                self.queue_incremental(
                    &row.connection_id,
                    &[resource],
                    "deliveries were refused while a dependency was down",
                )
                .await
            }
            .await;
            if let Err(error) = closed {
                tracing::warn!(%error, "cannot close a webhook gap yet");
                self.suspect_gap(Some(id));
            }
        }
    }

    /// An incremental import of every subscribed connection's resources.
    pub async fn catch_up(&self, why: &str) -> Result<(), WebhookError> {
        let live = store::live(&self.pool).await?;
        let mut by_connection: Vec<(String, Vec<Resource>)> = Vec::new();
        for row in live {
            let Ok(resource) = row.resource.parse::<Resource>() else {
                continue;
            };
            match by_connection
                .iter_mut()
                .find(|(c, _)| *c == row.connection_id)
            {
                Some((_, resources)) => resources.push(resource),
                None => by_connection.push((row.connection_id, vec![resource])),
            }
        }
        for (connection_id, resources) in by_connection {
            self.queue_incremental(&connection_id, &resources, why)
                .await?;
        }
        Ok(())
    }

    /// Queues an incremental import (scheduled priority) of `resources`.
    async fn queue_incremental(
        &self,
        connection_id: &str,
        resources: &[Resource],
        why: &str,
    ) -> Result<(), WebhookError> {
        let wire = pb::ImportJob {
            job_id: String::new(),
            connection_id: connection_id.to_owned(),
            resources: resources.iter().map(|r| r.as_str().to_owned()).collect(),
            mode: Mode::Incremental.to_wire() as i32,
            requested_by: format!("webhooks: {why}"),
            priority: Priority::Scheduled.to_wire() as i32,
            ..Default::default()
        };
        let spec = spec::validate(wire, true).map_err(|e| WebhookError::Invalid {
            field: e.field,
            problem: e.problem,
        })?;
        jobs::insert_queued(&self.pool, &spec).await?;
        let job_id = spec.job_id.to_string();
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: &self.topology.names.jobs_exchange,
                routing_key: JOB_ROUTING_KEY,
                body: &prost::Message::encode_to_vec(&spec.to_wire()),
                content_type: content_type::PROTOBUF,
                message_id: Some(&job_id),
                headers: Default::default(),
                mandatory: true,
            })
            .await;
        if let Err(error) = published {
            // No message runs it: the row goes too, or it would wait for the reconciler.
            let _ = jobs::remove_unqueued(&self.pool, spec.job_id).await;
            return Err(WebhookError::Unavailable(format!(
                "cannot queue the import: {error}"
            )));
        }
        tracing::info!(%connection_id, %job_id, %why, "queued an incremental import to close a webhook gap");
        Ok(())
    }
}

/// A random path token (256 bits, hex): the callback URL names the subscription by it.
fn path_token() -> Result<String, WebhookError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| WebhookError::Unavailable("no randomness for a path token".into()))?;
    Ok(hex::encode(bytes))
}
