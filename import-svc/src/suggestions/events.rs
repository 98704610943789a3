//! The audit events of billing suggestions: every decision a person makes on a proposed
//! write to Clio, and every write.
//!
//! | change                 | kind              | actor            | reason          |
//! |------------------------|-------------------|------------------|-----------------|
//! | pending → approved     | `WRITE_APPROVED`  | who approved it  | —               |
//! | approved → written     | `WRITE_PERFORMED` | import-svc       | —               |
//! | pending → rejected     | `WRITE_REJECTED`  | who rejected it  | their reason    |
//!
//! Conventions: tenant is the connection's firm, subject the suggestion, refs its
//! connection, Clio account and owner, scopes `activities:write` (the scope the write
//! needs). `approval_id` in the payload is the suggestion's id, which is how compliance's
//! write report pairs a write with its approval. A rejection's payload holds what would
//! have been written but not the description: it came from the calendar, and nothing of
//! it reached Clio.

use proto::common::v1::{AuditEvent, EventKind, EventRefs, RiskTier, Subject, subject};
use serde_json::{Value, json};

use super::detect::WRITE_SCOPE;
use super::store::SuggestionRow;
use crate::audit::SOURCE;

/// `WRITE_APPROVED` for `row` (as just approved) by `by`: what will be written, and what
/// the approver changed (`before` is the suggestion as it was).
pub fn approved(row: &SuggestionRow, before: &SuggestionRow, by: &str) -> AuditEvent {
    let mut edits = serde_json::Map::new();
    if before.quantity_secs != row.quantity_secs {
        edits.insert(
            "quantity_secs".into(),
            json!({"before": before.quantity_secs, "after": row.quantity_secs}),
        );
    }
    if before.description != row.description {
        edits.insert(
            "description".into(),
            json!({"before": before.description, "after": row.description}),
        );
    }
    event(
        row,
        EventKind::WriteApproved,
        by,
        "",
        json!({
            "approval_id": row.suggestion_id.to_string(),
            "calendar_entry_id": row.calendar_entry_id,
            "matter_id": row.matter_id,
            "user_id": row.user_id,
            "date": row.entry_date.to_string(),
            "quantity_secs": row.quantity_secs,
            "description": row.description,
            "edited": Value::Object(edits),
        }),
    )
}

/// `WRITE_PERFORMED` for `row` (as just written): the Clio activity that holds it, and
/// whether this write created it or found the one an earlier, unanswered attempt created.
pub fn performed(row: &SuggestionRow, activity_id: i64, found_existing: bool) -> AuditEvent {
    event(
        row,
        EventKind::WritePerformed,
        SOURCE,
        "",
        json!({
            "approval_id": row.suggestion_id.to_string(),
            "clio_activity_id": activity_id,
            "found_existing": found_existing,
            "attempts": row.write_attempts,
        }),
    )
}

/// `WRITE_REJECTED` for `row` (as just rejected) by `by`.
pub fn rejected(row: &SuggestionRow, by: &str, reason: &str) -> AuditEvent {
    event(
        row,
        EventKind::WriteRejected,
        by,
        reason,
        json!({
            "approval_id": row.suggestion_id.to_string(),
            "calendar_entry_id": row.calendar_entry_id,
            "matter_id": row.matter_id,
            "user_id": row.user_id,
            "date": row.entry_date.to_string(),
            "quantity_secs": row.quantity_secs,
        }),
    )
}

fn event(
    row: &SuggestionRow,
    kind: EventKind,
    by: &str,
    reason: &str,
    payload: Value,
) -> AuditEvent {
    AuditEvent {
        kind: kind as i32,
        tenant: row.tenant.clone(),
        actor: Some(crate::audit::actor(by)),
        subject: Some(Subject {
            kind: subject::Kind::Suggestion as i32,
            id: row.suggestion_id.to_string(),
        }),
        refs: Some(EventRefs {
            connection_id: row.connection_id.clone(),
            clio_account_id: row.clio_account_id.clone(),
            principal: row.owner.clone(),
            ..EventRefs::default()
        }),
        scopes: vec![WRITE_SCOPE.to_wire()],
        risk_tier: RiskTier::from(WRITE_SCOPE.risk_tier()) as i32,
        reason: reason.to_owned(),
        payload_json: payload.to_string(),
        source: SOURCE.to_owned(),
        // The outbox assigns the id (UUID v7) and the time.
        ..AuditEvent::default()
    }
}
