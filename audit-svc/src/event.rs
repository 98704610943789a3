//! An audit event as this service stores, hashes and returns it.
//!
//! Enum values are kept as the lower-case names the canonical bytes use (see
//! [`crate::canonical`]), so a stored row hashes exactly as it was written even if a later
//! contract renames or drops a value.

use chrono::{DateTime, Utc};
use proto::common::v1 as pb;
use uuid::Uuid;

use crate::canonical::{CANONICAL_VERSION, ObjectWriter, chain_hash};

/// Identifiers an event relates to beyond its subject; empty when they do not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub connection_id: String,
    pub app_id: String,
    pub principal: String,
    pub clio_user_id: String,
    pub clio_account_id: String,
    pub job_id: String,
    /// `us`, `eu`, `ca`, `au`, or empty.
    pub region: String,
}

/// What the producer said happened (everything but the chain fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody {
    pub event_id: Uuid,
    pub tenant: String,
    /// `connection_granted`, ...
    pub kind: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub refs: Refs,
    /// Normalised and sorted `<family>:<access>`.
    pub scopes: Vec<String>,
    /// `low` ... `very_high`, or empty.
    pub risk_tier: String,
    pub reason: String,
    pub source: String,
    /// Truncated to microseconds.
    pub occurred_at: DateTime<Utc>,
    /// Canonical JSON text of an object.
    pub payload: String,
    /// The authenticated credential that wrote the event (the verified caller of `Record`
    /// or of the ComplianceService call; `audit-svc` for the service's own denials).
    /// Empty only in events stored before writers were recorded: the canonical form then
    /// has no `writer` key, so they keep their hashes.
    pub writer: String,
}

/// A stored event: the body plus its place in the tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub body: EventBody,
    pub sequence: u64,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

/// Everything an event's canonical bytes cover, borrowed: from an [`EventRecord`], or
/// straight from the bytes of a stored row while verifying
/// ([`crate::stored_chain::RowHasher`]), so that both write the bytes with the same code.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalEvent<'a, S = String> {
    pub event_id: Uuid,
    pub tenant: &'a str,
    pub kind: &'a str,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub subject_kind: &'a str,
    pub subject_id: &'a str,
    pub connection_id: &'a str,
    pub app_id: &'a str,
    pub principal: &'a str,
    pub clio_user_id: &'a str,
    pub clio_account_id: &'a str,
    pub job_id: &'a str,
    pub region: &'a str,
    pub scopes: &'a [S],
    pub risk_tier: &'a str,
    pub reason: &'a str,
    pub source: &'a str,
    pub occurred_at: DateTime<Utc>,
    /// Canonical JSON text (UTF-8) of an object.
    pub payload: &'a [u8],
    pub writer: &'a str,
    pub sequence: u64,
    pub recorded_at: DateTime<Utc>,
}

impl<S: AsRef<str>> CanonicalEvent<'_, S> {
    /// Appends the canonical bytes (see [`crate::canonical`]) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut event_id = Uuid::encode_buffer();
        let event_id = self.event_id.hyphenated().encode_lower(&mut event_id);
        let mut object = ObjectWriter::begin(out);
        object
            .object("actor", |actor| {
                actor.str("id", self.actor_id).str("kind", self.actor_kind);
            })
            .str("event_id", event_id)
            .str("kind", self.kind)
            .time("occurred_at", &self.occurred_at)
            .raw("payload", self.payload)
            .str("reason", self.reason)
            .time("recorded_at", &self.recorded_at)
            .object("refs", |refs| {
                refs.str("app_id", self.app_id)
                    .str("clio_account_id", self.clio_account_id)
                    .str("clio_user_id", self.clio_user_id)
                    .str("connection_id", self.connection_id)
                    .str("job_id", self.job_id)
                    .str("principal", self.principal)
                    .str("region", self.region);
            })
            .str("risk_tier", self.risk_tier)
            .strings("scopes", self.scopes)
            .uint("sequence", self.sequence)
            .str("source", self.source)
            .object("subject", |subject| {
                subject
                    .str("id", self.subject_id)
                    .str("kind", self.subject_kind);
            })
            .str("tenant", self.tenant)
            .uint("v", u64::from(CANONICAL_VERSION));
        if !self.writer.is_empty() {
            object.str("writer", self.writer);
        }
        object.end();
    }
}

impl EventRecord {
    /// What the canonical bytes cover.
    pub fn canonical_event(&self) -> CanonicalEvent<'_> {
        let body = &self.body;
        CanonicalEvent {
            event_id: body.event_id,
            tenant: &body.tenant,
            kind: &body.kind,
            actor_kind: &body.actor_kind,
            actor_id: &body.actor_id,
            subject_kind: &body.subject_kind,
            subject_id: &body.subject_id,
            connection_id: &body.refs.connection_id,
            app_id: &body.refs.app_id,
            principal: &body.refs.principal,
            clio_user_id: &body.refs.clio_user_id,
            clio_account_id: &body.refs.clio_account_id,
            job_id: &body.refs.job_id,
            region: &body.refs.region,
            scopes: &body.scopes,
            risk_tier: &body.risk_tier,
            reason: &body.reason,
            source: &body.source,
            occurred_at: body.occurred_at,
            payload: body.payload.as_bytes(),
            writer: &body.writer,
            sequence: self.sequence,
            recorded_at: self.recorded_at,
        }
    }

    /// Appends the canonical bytes (see [`crate::canonical`]) to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        self.canonical_event().write(out);
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.payload.len());
        self.write_canonical(&mut out);
        out
    }

    /// The hash this event should have after `prev_hash`.
    pub fn expected_hash(&self, prev_hash: &str) -> String {
        chain_hash(prev_hash, &self.canonical_bytes())
    }

    pub fn to_wire(&self) -> pb::AuditEvent {
        let body = &self.body;
        pb::AuditEvent {
            event_id: body.event_id.to_string(),
            kind: kind_from_name(&body.kind) as i32,
            tenant: body.tenant.clone(),
            actor: Some(pb::Actor {
                kind: actor_kind_from_name(&body.actor_kind) as i32,
                id: body.actor_id.clone(),
            }),
            subject: Some(pb::Subject {
                kind: subject_kind_from_name(&body.subject_kind) as i32,
                id: body.subject_id.clone(),
            }),
            refs: Some(pb::EventRefs {
                connection_id: body.refs.connection_id.clone(),
                app_id: body.refs.app_id.clone(),
                principal: body.refs.principal.clone(),
                clio_user_id: body.refs.clio_user_id.clone(),
                clio_account_id: body.refs.clio_account_id.clone(),
                job_id: body.refs.job_id.clone(),
                region: region_from_name(&body.refs.region) as i32,
            }),
            scopes: body
                .scopes
                .iter()
                .filter_map(|s| s.parse::<scope_catalog::Scope>().ok())
                .map(|s| s.to_wire())
                .collect(),
            risk_tier: tier_from_name(&body.risk_tier) as i32,
            reason: body.reason.clone(),
            occurred_at: Some(proto::time::timestamp(body.occurred_at)),
            payload_json: body.payload.clone(),
            source: body.source.clone(),
            recorded_at: Some(proto::time::timestamp(self.recorded_at)),
            sequence: self.sequence,
            hash: self.hash.clone(),
            prev_hash: self.prev_hash.clone(),
            writer: body.writer.clone(),
        }
    }
}

/// `EVENT_KIND_CONNECTION_GRANTED` → `connection_granted`.
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn kind_name(kind: pb::EventKind) -> String {
    short_name(kind.as_str_name(), "EVENT_KIND_")
}

pub fn kind_from_name(name: &str) -> pb::EventKind {
    pb::EventKind::from_str_name(&format!("EVENT_KIND_{}", name.to_ascii_uppercase()))
        .unwrap_or(pb::EventKind::Unspecified)
}

pub fn actor_kind_name(kind: pb::actor::Kind) -> String {
    short_name(kind.as_str_name(), "KIND_")
}

fn actor_kind_from_name(name: &str) -> pb::actor::Kind {
    pb::actor::Kind::from_str_name(&format!("KIND_{}", name.to_ascii_uppercase()))
        .unwrap_or(pb::actor::Kind::Unspecified)
}

pub fn subject_kind_name(kind: pb::subject::Kind) -> String {
    short_name(kind.as_str_name(), "KIND_")
}

pub fn subject_kind_from_name(name: &str) -> pb::subject::Kind {
    pb::subject::Kind::from_str_name(&format!("KIND_{}", name.to_ascii_uppercase()))
        .unwrap_or(pb::subject::Kind::Unspecified)
}

/// `REGION_US` → `us`; unspecified is empty.
pub fn region_name(region: pb::Region) -> String {
    match region {
        pb::Region::Unspecified => String::new(),
        other => short_name(other.as_str_name(), "REGION_"),
    }
}

pub fn region_from_name(name: &str) -> pb::Region {
    if name.is_empty() {
        return pb::Region::Unspecified;
    }
    pb::Region::from_str_name(&format!("REGION_{}", name.to_ascii_uppercase()))
        .unwrap_or(pb::Region::Unspecified)
}

pub fn tier_from_name(name: &str) -> pb::RiskTier {
    match name {
        "low" => pb::RiskTier::Low,
        "medium" => pb::RiskTier::Medium,
        "high" => pb::RiskTier::High,
        "very_high" => pb::RiskTier::VeryHigh,
        _ => pb::RiskTier::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::canonical_text;

    fn sample() -> EventRecord {
        EventRecord {
            body: EventBody {
                event_id: Uuid::nil(),
                tenant: "firm \"a\"".into(),
                kind: "connection_granted".into(),
                actor_kind: "person".into(),
                actor_id: "alice".into(),
                subject_kind: "connection".into(),
                subject_id: "c1".into(),
                refs: Refs {
                    connection_id: "c1".into(),
                    region: "us".into(),
                    ..Refs::default()
                },
                scopes: vec!["contacts:read".into(), "matters:write".into()],
                risk_tier: "high".into(),
                reason: "line\nbreak".into(),
                source: "auth-svc".into(),
                occurred_at: DateTime::from_timestamp(1_700_000_000, 5_000).unwrap_or_default(),
                payload: r#"{"a":[1,"x"],"b":{"c":null}}"#.into(),
                writer: String::new(),
            },
            sequence: 42,
            recorded_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap_or_default(),
            prev_hash: crate::canonical::GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_direct_writer_produces_canonical_json() {
        let bytes = sample().canonical_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(canonical_text(&text).unwrap(), text);
        assert!(
            text.starts_with(r#"{"actor":{"id":"alice","kind":"person"},"event_id":"#),
            "{text}"
        );
        assert!(text.ends_with(r#""tenant":"firm \"a\"","v":1}"#), "{text}");
    }

    #[test]
    fn the_writer_is_hashed_when_set_and_absent_from_older_events() {
        let old = sample();
        let mut written = sample();
        written.body.writer = "auth_writer".into();
        let text = String::from_utf8(written.canonical_bytes()).unwrap();
        assert_eq!(canonical_text(&text).unwrap(), text);
        assert!(text.ends_with(r#""v":1,"writer":"auth_writer"}"#), "{text}");
        let old_text = String::from_utf8(old.canonical_bytes()).unwrap();
        assert!(!old_text.contains("writer"), "{old_text}");
        assert_ne!(
            old.expected_hash(crate::canonical::GENESIS_HASH),
            written.expected_hash(crate::canonical::GENESIS_HASH)
        );
    }

    #[test]
    fn names_round_trip() {
        for kind in [
            pb::EventKind::ConnectionGranted,
            pb::EventKind::RevocationRetried,
        ] {
            assert_eq!(kind_from_name(&kind_name(kind)), kind);
        }
        assert_eq!(kind_name(pb::EventKind::TokenLeased), "token_leased");
        assert_eq!(region_name(pb::Region::Eu), "eu");
        assert_eq!(region_from_name(""), pb::Region::Unspecified);
        assert_eq!(
            subject_kind_name(pb::subject::Kind::EncryptionKey),
            "encryption_key"
        );
    }
}
