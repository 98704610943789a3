//! Checking what producers send before anything is hashed: every problem is an
//! `InvalidArgument` naming the field (`events[3].tenant: must not be empty`).

use chrono::{DateTime, SubsecRound, Utc};
use proto::common::v1 as pb;
use scope_catalog::{RiskTier, ScopeSet};
use uuid::Uuid;

use crate::canonical::canonical_value;
use crate::error::AuditError;
use crate::event::{EventBody, Refs, actor_kind_name, kind_name, region_name, subject_kind_name};

pub use proto::audit_limits::{MAX_EVENTS_PER_RECORD, MAX_PAYLOAD_BYTES};
use proto::audit_limits::{MAX_ID_BYTES, MAX_TEXT_BYTES, required_id_problem, text_problem};

/// A string field: no NUL (Postgres text cannot hold one), bounded (the limits are
/// `proto::audit_limits`, which producers' outboxes fit events to).
fn text(field: &str, value: &str, max: usize) -> Result<String, AuditError> {
    match text_problem(value, max) {
        Some(problem) => Err(AuditError::invalid(field, problem)),
        None => Ok(value.to_owned()),
    }
}

fn required(field: &str, value: &str) -> Result<String, AuditError> {
    match required_id_problem(value) {
        Some(problem) => Err(AuditError::invalid(field, problem)),
        None => Ok(value.to_owned()),
    }
}

/// A wire time, truncated to the microseconds Postgres keeps.
pub fn instant(field: &str, at: &prost_types::Timestamp) -> Result<DateTime<Utc>, AuditError> {
    if !(0..1_000_000_000).contains(&at.nanos) {
        return Err(AuditError::invalid(
            format!("{field}.nanos"),
            "out of range",
        ));
    }
    proto::time::date_time(at)
        .map(|t| t.trunc_subsecs(6))
        .ok_or_else(|| AuditError::invalid(field, "out of range"))
}

/// The payload as canonical JSON text of an object.
fn payload(field: &str, raw: &str) -> Result<String, AuditError> {
    if raw.len() > MAX_PAYLOAD_BYTES {
        return Err(AuditError::invalid(field, "larger than 64 KiB"));
    }
    if raw.trim().is_empty() {
        return Ok("{}".into());
    }
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| AuditError::invalid(field, format!("not valid JSON ({e})")))?;
    if !value.is_object() {
        return Err(AuditError::invalid(field, "not a JSON object"));
    }
    let canonical = canonical_value(&value);
    // jsonb refuses \u0000 in strings; refuse it here with a clear message instead.
    if canonical.contains("\\u0000") {
        return Err(AuditError::invalid(field, "contains a NUL character"));
    }
    Ok(canonical)
}

pub fn event_kind(field: &str, raw: i32) -> Result<pb::EventKind, AuditError> {
    match pb::EventKind::try_from(raw) {
        Ok(pb::EventKind::Unspecified) => Err(AuditError::invalid(field, "must be set")),
        Ok(kind) => Ok(kind),
        Err(_) => Err(AuditError::invalid(field, format!("unknown kind {raw}"))),
    }
}

/// Validates one event of a `Record` request; `at` is its path (`events[3]`).
pub fn event(at: &str, wire: &pb::AuditEvent) -> Result<EventBody, AuditError> {
    let field = |name: &str| path(at, name);
    let event_id = event_id(at, &wire.event_id)?;
    let kind = event_kind(&field("kind"), wire.kind)?;
    if kind == pb::EventKind::ReviewGenerated {
        // Its payload drives the review projection; only GenerateQuarterlyReview writes it.
        return Err(AuditError::invalid(
            field("kind"),
            "REVIEW_GENERATED is recorded only by GenerateQuarterlyReview",
        ));
    }
    let tenant = required(&field("tenant"), &wire.tenant)?;
    let (actor_kind, actor_id) = actor(at, wire.actor.as_ref())?;
    let (subject_kind, subject_id) = subject(at, wire.subject.as_ref())?;
    let refs = match &wire.refs {
        None => Refs::default(),
        Some(r) => refs(at, r)?,
    };
    let scopes = ScopeSet::from_wire(&wire.scopes, &field("scopes"))
        .map_err(|e| AuditError::invalid(e.field, e.problem))?;
    let risk_tier = risk_tier(at, wire.risk_tier, &scopes)?;
    let occurred_at = wire
        .occurred_at
        .as_ref()
        .ok_or_else(|| AuditError::invalid(field("occurred_at"), "must be set"))
        .and_then(|t| instant(&field("occurred_at"), t))?;

    Ok(EventBody {
        event_id,
        tenant,
        kind: kind_name(kind),
        actor_kind,
        actor_id,
        subject_kind,
        subject_id,
        refs,
        scopes: scopes.iter().map(ToString::to_string).collect(),
        risk_tier,
        reason: text(&field("reason"), &wire.reason, MAX_TEXT_BYTES)?,
        source: text(&field("source"), &wire.source, MAX_ID_BYTES)?,
        occurred_at,
        payload: payload(&field("payload_json"), &wire.payload_json)?,
        // Set from the authenticated caller, never from the request.
        writer: String::new(),
    })
}

/// The path of the field `name` of the event at `at` (`events[3].tenant`).
fn path(at: &str, name: &str) -> String {
    format!("{at}.{name}")
}

fn event_id(at: &str, raw: &str) -> Result<Uuid, AuditError> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        if raw.trim().is_empty() {
            AuditError::invalid(path(at, "event_id"), "must not be empty")
        } else {
            AuditError::invalid(path(at, "event_id"), "not a UUID")
        }
    })
}

/// The actor's kind name and id.
fn actor(at: &str, actor: Option<&pb::Actor>) -> Result<(String, String), AuditError> {
    let actor = actor.ok_or_else(|| AuditError::invalid(path(at, "actor"), "must be set"))?;
    let actor_kind = match pb::actor::Kind::try_from(actor.kind) {
        Ok(pb::actor::Kind::Unspecified) | Err(_) => {
            return Err(AuditError::invalid(
                path(at, "actor.kind"),
                format!("must be PERSON, SERVICE or SYSTEM, not {}", actor.kind),
            ));
        }
        Ok(kind) => actor_kind_name(kind),
    };
    let actor_id = required(&path(at, "actor.id"), &actor.id)?;
    Ok((actor_kind, actor_id))
}

/// The subject's kind name and id.
fn subject(at: &str, subject: Option<&pb::Subject>) -> Result<(String, String), AuditError> {
    let subject = subject.ok_or_else(|| AuditError::invalid(path(at, "subject"), "must be set"))?;
    let subject_kind = match pb::subject::Kind::try_from(subject.kind) {
        Ok(pb::subject::Kind::Unspecified) | Err(_) => {
            return Err(AuditError::invalid(
                path(at, "subject.kind"),
                format!("unknown subject kind {}", subject.kind),
            ));
        }
        Ok(kind) => subject_kind_name(kind),
    };
    let subject_id = required(&path(at, "subject.id"), &subject.id)?;
    Ok((subject_kind, subject_id))
}

fn refs(at: &str, r: &pb::EventRefs) -> Result<Refs, AuditError> {
    let field = |name: &str| path(at, name);
    Ok(Refs {
        connection_id: text(&field("refs.connection_id"), &r.connection_id, MAX_ID_BYTES)?,
        app_id: text(&field("refs.app_id"), &r.app_id, MAX_ID_BYTES)?,
        principal: text(&field("refs.principal"), &r.principal, MAX_ID_BYTES)?,
        clio_user_id: text(&field("refs.clio_user_id"), &r.clio_user_id, MAX_ID_BYTES)?,
        clio_account_id: text(
            &field("refs.clio_account_id"),
            &r.clio_account_id,
            MAX_ID_BYTES,
        )?,
        job_id: text(&field("refs.job_id"), &r.job_id, MAX_ID_BYTES)?,
        region: pb::Region::try_from(r.region)
            .map(region_name)
            .map_err(|_| {
                AuditError::invalid(field("refs.region"), format!("unknown region {}", r.region))
            })?,
    })
}

/// The risk tier's name, the catalogue's tier of `scopes` when unset.
fn risk_tier(at: &str, raw: i32, scopes: &ScopeSet) -> Result<String, AuditError> {
    Ok(match pb::RiskTier::try_from(raw) {
        Err(_) => {
            return Err(AuditError::invalid(
                path(at, "risk_tier"),
                format!("unknown risk tier {raw}"),
            ));
        }
        // Unset with scopes: the catalogue's tier of the set (never re-encoded here).
        Ok(pb::RiskTier::Unspecified) if !scopes.is_empty() => {
            scopes.risk_tier().as_str().to_owned()
        }
        Ok(pb::RiskTier::Unspecified) => String::new(),
        Ok(_) => RiskTier::from_wire(raw)
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
    })
}

/// Bounds of a time range; `None` is open on that side.
pub type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A `TimeRange` of a request: `from` inclusive, `to` exclusive, `to` not before `from`.
pub fn time_range(
    field: &str,
    range: Option<&proto::audit::v1::TimeRange>,
) -> Result<Bounds, AuditError> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let from = range
        .from
        .as_ref()
        .map(|t| instant(&format!("{field}.from"), t))
        .transpose()?;
    let to = range
        .to
        .as_ref()
        .map(|t| instant(&format!("{field}.to"), t))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(AuditError::invalid(
            format!("{field}.to"),
            format!("before {field}.from"),
        ));
    }
    Ok((from, to))
}

/// A required tenant of a read request.
pub fn tenant(field: &str, value: &str) -> Result<String, AuditError> {
    required(field, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::AuditEvent {
        pb::AuditEvent {
            event_id: Uuid::new_v4().to_string(),
            kind: pb::EventKind::ConnectionGranted as i32,
            tenant: "firm".into(),
            actor: Some(pb::Actor {
                kind: pb::actor::Kind::Person as i32,
                id: "alice".into(),
            }),
            subject: Some(pb::Subject {
                kind: pb::subject::Kind::Connection as i32,
                id: "c1".into(),
            }),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            }),
            scopes: vec![pb::Scope {
                family: "activities".into(),
                access: pb::Access::Write as i32,
            }],
            ..Default::default()
        }
    }

    fn problem(mutate: impl FnOnce(&mut pb::AuditEvent)) -> String {
        let mut wire = valid();
        mutate(&mut wire);
        event("events[2]", &wire).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_event_is_normalised() {
        let body = event("events[0]", &valid()).unwrap();
        assert_eq!(body.kind, "connection_granted");
        assert_eq!(body.risk_tier, "high");
        assert_eq!(body.payload, "{}");
        assert_eq!(body.occurred_at.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn each_problem_names_its_field() {
        assert_eq!(
            problem(|e| e.tenant.clear()),
            "events[2].tenant: must not be empty"
        );
        assert_eq!(problem(|e| e.kind = 99), "events[2].kind: unknown kind 99");
        assert_eq!(
            problem(|e| e.payload_json = "[1]".into()),
            "events[2].payload_json: not a JSON object"
        );
        assert_eq!(
            problem(|e| e.payload_json = format!("{{\"x\":\"{}\"}}", "a".repeat(70_000))),
            "events[2].payload_json: larger than 64 KiB"
        );
        assert_eq!(
            problem(|e| e.payload_json = r#"{"x":"a\u0000b"}"#.into()),
            "events[2].payload_json: contains a NUL character"
        );
        assert!(
            problem(|e| e.scopes[0].family = "bogus".into())
                .starts_with("events[2].scopes[0].family")
        );
        assert_eq!(
            problem(|e| e.occurred_at = None),
            "events[2].occurred_at: must be set"
        );
        assert_eq!(
            problem(|e| e.event_id = "nope".into()),
            "events[2].event_id: not a UUID"
        );
    }
}
