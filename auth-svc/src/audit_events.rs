//! Building the audit events auth-svc records, and recording denied calls.
//!
//! Conventions audit-svc relies on: `refs` filled wherever they apply; `scopes` is the
//! grant (or the declared set for app events) with its risk tier; `tenant` is the app's
//! tenant (the platform tenant for events about no firm); payloads are JSON objects that
//! never hold a secret.

use chrono::{DateTime, Utc};
use proto::common::v1::{Actor, AuditEvent, EventKind, EventRefs, Subject, actor, subject};
use scope_catalog::ScopeSet;

pub const SOURCE: &str = "auth-svc";

pub fn service_actor(name: &str) -> Actor {
    Actor {
        kind: actor::Kind::Service as i32,
        id: name.to_owned(),
    }
}

pub fn person_actor(principal: &str) -> Actor {
    Actor {
        kind: actor::Kind::Person as i32,
        id: principal.to_owned(),
    }
}

/// auth-svc itself (the refresher, the revocation retry worker).
pub fn system_actor() -> Actor {
    Actor {
        kind: actor::Kind::System as i32,
        id: SOURCE.to_owned(),
    }
}

pub fn subject_of(kind: subject::Kind, id: impl ToString) -> Subject {
    Subject {
        kind: kind as i32,
        id: id.to_string(),
    }
}

/// An event under construction.
pub struct EventBuilder(AuditEvent);

impl EventBuilder {
    pub fn new(
        kind: EventKind,
        tenant: &str,
        actor: Actor,
        subject: Subject,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        EventBuilder(AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            kind: kind as i32,
            tenant: tenant.to_owned(),
            actor: Some(actor),
            subject: Some(subject),
            occurred_at: Some(proto::time::timestamp(occurred_at)),
            payload_json: "{}".into(),
            source: SOURCE.into(),
            ..AuditEvent::default()
        })
    }

    pub fn refs(mut self, refs: EventRefs) -> Self {
        self.0.refs = Some(refs);
        self
    }

    /// The scopes and their tier.
    pub fn scopes(mut self, scopes: &ScopeSet) -> Self {
        self.0.scopes = scopes.to_wire();
        self.0.risk_tier = proto::common::v1::RiskTier::from(scopes.risk_tier()) as i32;
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.0.reason = reason.to_owned();
        self
    }

    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.0.payload_json = payload.to_string();
        self
    }

    pub fn build(self) -> AuditEvent {
        self.0
    }
}
