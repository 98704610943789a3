//! The audit events import-svc records about jobs, written to its outbox in the same
//! transaction as the job status change they describe (the relay delivers them to
//! audit-svc; see `audit_outbox`).
//!
//! Which change gives which event:
//!
//! | change                                   | kind                  | reason                |
//! |------------------------------------------|-----------------------|-----------------------|
//! | an attempt passes its checks and holds a lease (every attempt) | `IMPORT_STARTED` | — |
//! | running → completed                      | `IMPORT_COMPLETED`    | —                     |
//! | running → failed                         | `IMPORT_FAILED`       | the failure           |
//! | queued/running → cancelled               | `IMPORT_FAILED`       | `cancelled: <why>`    |
//! | a message is dead-lettered               | `IMPORT_DEAD_LETTERED`| the rejection reason  |
//!
//! `IMPORT_STARTED` is recorded for every attempt, with `attempt` and `resumed` in the
//! payload: each attempt leases a token and reads the firm's data again, and compliance
//! must see every such access, not only the first. It is written when the attempt has
//! passed the grant check and holds a lease (the transaction that records the job's Clio
//! account), not at the claim, because only then is the firm known and Clio about to be
//! read; an attempt refused before that records only its dead-letter event. Cancelling has
//! no kind of its own in `EventKind`, so it is `IMPORT_FAILED` with a `cancelled: ` reason
//! and `"cancelled": true` in the payload.
//!
//! Conventions: tenant is the connection's firm (from auth-svc's `GetConnection`, also
//! stored on the job for events recorded later), or the configured platform tenant while
//! it is unknown (unknown connection, a message without a job); subject is the job (for a
//! message without a readable job id: its AMQP message id, else `unidentified`); actor is
//! the job's `requested_by` (a person when it is an e-mail address, else the service that
//! asked; import-svc itself as SYSTEM when nobody is named); scopes are the scopes the job
//! needs. Payloads never hold a secret.

use proto::common::v1::{Actor, AuditEvent, EventKind, EventRefs, Subject, actor, subject};
use scope_catalog::{Resource, ScopeSet};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::job::checkpoints::{self, ResourceRow};
use crate::job::spec::JobSpec;
use crate::job::store::{JobRow, JobStatus};
use crate::leases::ConnectionInfo;

pub const SOURCE: &str = "import-svc";

/// Subject id of a dead-lettered message with neither a job id nor a message id.
const UNIDENTIFIED: &str = "unidentified";

/// Recording an event failed; the status change it belongs to did not commit either.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] audit_outbox::OutboxError),
}

/// The actor of an event done by `by`: import-svc itself ([`SOURCE`]) is the system, a
/// person's credential is named by their address, anything else is a service's.
pub fn actor(by: &str) -> proto::common::v1::Actor {
    use proto::common::v1::actor::Kind;
    proto::common::v1::Actor {
        kind: if by == SOURCE {
            Kind::System
        } else if by.contains('@') {
            Kind::Person
        } else {
            Kind::Service
        } as i32,
        id: by.to_owned(),
    }
}

/// Writes events to the outbox and wakes the relay once they are committed.
#[derive(Clone, Default)]
pub struct Auditor {
    platform_tenant: String,
    waker: audit_outbox::Waker,
}

impl Auditor {
    pub fn new(platform_tenant: &str, waker: audit_outbox::Waker) -> Self {
        Auditor {
            platform_tenant: platform_tenant.to_owned(),
            waker,
        }
    }

    /// Adds one event about `job` to `tx`: call it last before the commit (the outbox
    /// holds its ordering lock from here to the commit), then [`Auditor::committed`].
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        job: &JobContext,
        kind: EventKind,
        reason: &str,
        payload: Value,
    ) -> Result<(), RecordError> {
        let event = job.event(&self.platform_tenant, kind, reason, payload);
        audit_outbox::enqueue(tx, event).await?;
        Ok(())
    }

    /// Records how a job ended (`row` is the job just finished in `tx`), with its counts.
    pub async fn job_ended(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        job: &JobContext,
        row: &JobRow,
    ) -> Result<(), RecordError> {
        let resources = checkpoints::resource_rows(&mut **tx, row.job_id).await?;
        let (kind, reason, payload) = ending(row, &resources);
        self.enqueue(tx, job, kind, &reason, payload).await
    }

    /// Adds an event built elsewhere (a billing suggestion's) to `tx`, last before the
    /// commit as [`Auditor::enqueue`] says; then [`Auditor::committed`].
    pub async fn enqueue_event(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: AuditEvent,
    ) -> Result<(), RecordError> {
        audit_outbox::enqueue(tx, event).await?;
        Ok(())
    }

    /// Tells the relay events are waiting (after the commit).
    pub fn committed(&self) {
        self.waker.wake();
    }
}

/// What every event about one job (or one rejected message) carries.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: Option<Uuid>,
    subject_id: String,
    /// The connection's firm, once auth-svc told us.
    tenant: Option<String>,
    requested_by: String,
    /// The verified caller that submitted the job through SubmitJob: the actor of its
    /// events (`requested_by` is then who it acted for).
    submitted_by: Option<String>,
    refs: EventRefs,
    scopes: ScopeSet,
}

impl JobContext {
    /// A valid job, before anything is known about its connection.
    pub fn of_spec(spec: &JobSpec) -> Self {
        JobContext {
            job_id: Some(spec.job_id),
            subject_id: spec.job_id.to_string(),
            tenant: None,
            requested_by: spec.requested_by.clone(),
            submitted_by: None,
            refs: EventRefs {
                connection_id: spec.connection_id.clone(),
                job_id: spec.job_id.to_string(),
                ..EventRefs::default()
            },
            scopes: spec.required_scopes().into_iter().collect(),
        }
    }

    /// A stored job (events recorded outside a run: a cancel through the API).
    pub fn of_row(row: &JobRow) -> Self {
        let scopes = row
            .resources
            .iter()
            .filter_map(|r| r.parse::<Resource>().ok())
            .map(|r| r.required_scope())
            .collect();
        let mut context = JobContext {
            job_id: Some(row.job_id),
            subject_id: row.job_id.to_string(),
            tenant: None,
            requested_by: row.requested_by.clone(),
            submitted_by: None,
            refs: EventRefs {
                connection_id: row.connection_id.clone(),
                job_id: row.job_id.to_string(),
                ..EventRefs::default()
            },
            scopes,
        };
        context.learn_stored(row);
        context
    }

    /// A message refused before it became a valid job: whatever could be read of it. The
    /// values are unchecked (they may be why it was refused), so they are kept only
    /// printable and short: they are stored with the refusal.
    pub fn of_rejected_message(
        job_id: Option<Uuid>,
        connection_id: &str,
        requested_by: &str,
        message_id: Option<&str>,
    ) -> Self {
        use crate::job::spec::{MAX_ID_CHARS, MAX_REQUESTED_BY_CHARS, printable};
        let subject_id = match (job_id, message_id) {
            (Some(job_id), _) => job_id.to_string(),
            (None, Some(message_id)) if !message_id.trim().is_empty() => {
                printable(message_id, MAX_ID_CHARS)
            }
            (None, _) => UNIDENTIFIED.to_owned(),
        };
        JobContext {
            job_id,
            subject_id,
            tenant: None,
            requested_by: printable(requested_by.trim(), MAX_REQUESTED_BY_CHARS),
            submitted_by: None,
            refs: EventRefs {
                connection_id: printable(connection_id.trim(), MAX_ID_CHARS),
                job_id: job_id.map(|j| j.to_string()).unwrap_or_default(),
                ..EventRefs::default()
            },
            scopes: ScopeSet::default(),
        }
    }

    /// What an earlier attempt stored on the job (tenant, region, account).
    pub fn learn_stored(&mut self, row: &JobRow) {
        if let Some(submitter) = row.submitted_by.as_deref().filter(|s| !s.is_empty()) {
            self.submitted_by = Some(submitter.to_owned());
        }
        if let Some(tenant) = row.tenant.as_deref().filter(|t| !t.is_empty()) {
            self.tenant = Some(tenant.to_owned());
        }
        if let Some(region) = row.region {
            self.refs.region = region;
        }
        if let Some(account) = row.clio_account_id.as_deref() {
            self.refs.clio_account_id = account.to_owned();
        }
    }

    /// What auth-svc said about the job's connection.
    pub fn learn_connection(&mut self, connection: &ConnectionInfo) {
        if !connection.tenant.trim().is_empty() {
            self.tenant = Some(connection.tenant.clone());
        }
        self.refs.region = connection.region;
        if !connection.account_id.is_empty() {
            self.refs.clio_account_id = connection.account_id.clone();
        }
    }

    pub fn connection_id(&self) -> &str {
        &self.refs.connection_id
    }

    /// The Clio account the leased token belongs to.
    pub fn learn_account(&mut self, account_id: &str) {
        self.refs.clio_account_id = account_id.to_owned();
    }

    fn actor(&self) -> Actor {
        if let Some(submitter) = &self.submitted_by {
            return Actor {
                kind: actor::Kind::Service as i32,
                id: submitter.clone(),
            };
        }
        // From the queue: the producer's own word is all there is.
        let (kind, id) = if self.requested_by.is_empty() {
            (actor::Kind::System, SOURCE)
        } else if self.requested_by.contains('@') {
            (actor::Kind::Person, self.requested_by.as_str())
        } else {
            (actor::Kind::Service, self.requested_by.as_str())
        };
        Actor {
            kind: kind as i32,
            id: id.to_owned(),
        }
    }

    /// A verified submitter acts for `requested_by`; the payload says for whom.
    fn with_on_behalf_of(&self, mut payload: Value) -> Value {
        if self.submitted_by.is_some()
            && !self.requested_by.is_empty()
            && let Value::Object(map) = &mut payload
        {
            map.insert(
                "on_behalf_of".into(),
                Value::String(self.requested_by.clone()),
            );
        }
        payload
    }

    fn event(
        &self,
        platform_tenant: &str,
        kind: EventKind,
        reason: &str,
        payload: Value,
    ) -> AuditEvent {
        AuditEvent {
            kind: kind as i32,
            tenant: self
                .tenant
                .clone()
                .unwrap_or_else(|| platform_tenant.to_owned()),
            actor: Some(self.actor()),
            subject: Some(Subject {
                kind: subject::Kind::Job as i32,
                id: self.subject_id.clone(),
            }),
            refs: Some(self.refs.clone()),
            scopes: self.scopes.to_wire(),
            risk_tier: if self.scopes.is_empty() {
                proto::common::v1::RiskTier::Unspecified as i32
            } else {
                proto::common::v1::RiskTier::from(self.scopes.risk_tier()) as i32
            },
            reason: reason.to_owned(),
            payload_json: self.with_on_behalf_of(payload).to_string(),
            source: SOURCE.to_owned(),
            // The outbox assigns the id (UUID v7) and the time.
            ..AuditEvent::default()
        }
    }
}

/// The payload of `IMPORT_STARTED`.
pub fn started_payload(spec: &JobSpec, attempt: i32) -> Value {
    json!({
        "attempt": attempt,
        "resumed": attempt > 1,
        "mode": spec.mode.as_str(),
        "resources": spec.resources.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    })
}

/// The kind, reason and payload of a finished job's event.
pub fn ending(row: &JobRow, resources: &[ResourceRow]) -> (EventKind, String, Value) {
    let counts = resource_counts(resources);
    let failure = row.failure_reason.clone().unwrap_or_default();
    match row.status() {
        JobStatus::Completed => (
            EventKind::ImportCompleted,
            String::new(),
            json!({ "attempt": row.attempts, "resources": counts }),
        ),
        JobStatus::Cancelled => {
            let why = row
                .cancel_reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given");
            (
                EventKind::ImportFailed,
                format!("cancelled: {why}"),
                json!({
                    "cancelled": true,
                    "cancelled_by": row.cancelled_by.clone().unwrap_or_default(),
                    "attempt": row.attempts,
                    "resources": counts,
                }),
            )
        }
        JobStatus::DeadLettered => (
            EventKind::ImportDeadLettered,
            failure,
            json!({ "attempt": row.attempts, "resources": counts }),
        ),
        JobStatus::Failed | JobStatus::Queued | JobStatus::Running => (
            EventKind::ImportFailed,
            failure,
            json!({ "attempt": row.attempts, "resources": counts }),
        ),
    }
}

/// Per resource: pages, records fetched, written and marked deleted.
pub fn resource_counts(resources: &[ResourceRow]) -> Value {
    let map = resources
        .iter()
        .map(|r| {
            (
                r.resource.clone(),
                json!({
                    "pages": r.pages,
                    "fetched": r.records_fetched,
                    "written": r.records_written,
                    "deleted": r.records_deleted,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::Mode;

    fn spec(requested_by: &str) -> JobSpec {
        JobSpec {
            job_id: Uuid::now_v7(),
            connection_id: "conn-1".into(),
            resources: vec![Resource::Contacts, Resource::Matters],
            mode: Mode::Full,
            updated_since: None,
            filters: Default::default(),
            extra_fields: Default::default(),
            requested_by: requested_by.into(),
            priority: crate::job::spec::Priority::Scheduled,
        }
    }

    fn connection(tenant: &str) -> ConnectionInfo {
        ConnectionInfo {
            granted: ScopeSet::default(),
            usable: Ok(()),
            account_id: "acct-9".into(),
            tenant: tenant.into(),
            principal: "ann@firm".into(),
            revoked: false,
            region: proto::common::v1::Region::Eu as i32,
        }
    }

    #[test]
    fn the_outbox_migration_is_the_crate_schema_unchanged() {
        assert_eq!(
            include_str!("../migrations/0004_audit_outbox.sql"),
            audit_outbox::SCHEMA_SQL
        );
    }

    #[test]
    fn a_job_event_carries_tenant_subject_refs_actor_and_scopes() {
        let spec = spec("nightly-sync");
        let mut job = JobContext::of_spec(&spec);
        let before = job.event("platform", EventKind::ImportStarted, "", json!({}));
        assert_eq!(
            before.tenant, "platform",
            "tenant unknown until auth-svc answers"
        );

        job.learn_connection(&connection("firm-a"));
        let event = job.event("platform", EventKind::ImportStarted, "", json!({"a": 1}));
        assert_eq!(event.tenant, "firm-a");
        assert_eq!(event.kind, EventKind::ImportStarted as i32);
        let subject = event.subject.unwrap();
        assert_eq!(subject.kind, subject::Kind::Job as i32);
        assert_eq!(subject.id, spec.job_id.to_string());
        let refs = event.refs.unwrap();
        assert_eq!(refs.connection_id, "conn-1");
        assert_eq!(refs.job_id, spec.job_id.to_string());
        assert_eq!(refs.clio_account_id, "acct-9");
        assert_eq!(refs.region, proto::common::v1::Region::Eu as i32);
        let actor = event.actor.unwrap();
        assert_eq!(
            (actor.kind, actor.id.as_str()),
            (actor::Kind::Service as i32, "nightly-sync")
        );
        let mut scopes: Vec<String> = ScopeSet::from_wire(&event.scopes, "scopes")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        scopes.sort();
        assert_eq!(scopes, ["contacts:read", "matters:read"]);
        assert_ne!(event.risk_tier, 0);
        assert_eq!(event.source, SOURCE);
        assert_eq!(event.payload_json, r#"{"a":1}"#);
    }

    #[test]
    fn the_actor_is_a_person_an_asking_service_or_import_svc_itself() {
        let person = JobContext::of_spec(&spec("ann@firm.example")).actor();
        assert_eq!(person.kind, actor::Kind::Person as i32);
        let nobody = JobContext::of_spec(&spec("")).actor();
        assert_eq!(
            (nobody.kind, nobody.id.as_str()),
            (actor::Kind::System as i32, SOURCE)
        );
    }

    #[test]
    fn a_message_without_a_job_id_is_named_by_its_message_id() {
        let named = JobContext::of_rejected_message(None, "", "", Some("m-1"));
        assert_eq!(named.subject_id, "m-1");
        let anonymous = JobContext::of_rejected_message(None, "", "", None);
        assert_eq!(anonymous.subject_id, UNIDENTIFIED);
        let event = anonymous.event("platform", EventKind::ImportDeadLettered, "bad", json!({}));
        assert_eq!(event.tenant, "platform");
        assert!(event.scopes.is_empty());
        assert_eq!(event.risk_tier, 0);
    }
}
