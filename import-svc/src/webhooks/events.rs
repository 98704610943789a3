//! The audit events of webhook subscriptions.
//!
//! | what                              | kind                       | actor                 |
//! |-----------------------------------|----------------------------|-----------------------|
//! | subscribed at Clio                | `WEBHOOK_SUBSCRIBED`       | who enabled it        |
//! | renewed before expiry             | `WEBHOOK_RENEWED`          | import-svc            |
//! | removed (disabled, revoked, gone) | `WEBHOOK_REMOVED`          | who disabled it, or import-svc |
//! | a request refused by the receiver | `WEBHOOK_DELIVERY_REFUSED` | import-svc            |
//!
//! Tenant is the connection's firm, subject the subscription, refs its connection, Clio
//! account and owner; scopes `webhooks:write` and the resource's read scope (what a
//! subscription uses). A refusal's payload says why and where the request came from; it
//! never holds the request's body or signature.

use proto::common::v1::{AuditEvent, EventKind, EventRefs, RiskTier, Subject, subject};
use scope_catalog::{Access, Family, Resource, Scope};
use serde_json::{Value, json};

use super::store::SubscriptionRow;
use crate::audit::SOURCE;

/// The scope creating a subscription needs, beside the resource's read scope.
pub const WEBHOOKS_SCOPE: Scope = Scope::new(Family::Webhooks, Access::Write);

pub fn subscribed(row: &SubscriptionRow, by: &str) -> AuditEvent {
    event(
        row,
        EventKind::WebhookSubscribed,
        by,
        "",
        json!({
            "resource": row.resource,
            "clio_webhook_id": row.clio_webhook_id,
            "expires_at": row.expires_at,
        }),
    )
}

pub fn renewed(
    row: &SubscriptionRow,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> AuditEvent {
    event(
        row,
        EventKind::WebhookRenewed,
        SOURCE,
        "",
        json!({
            "resource": row.resource,
            "clio_webhook_id": row.clio_webhook_id,
            "previous_expires_at": row.expires_at,
            "expires_at": expires_at,
        }),
    )
}

pub fn removed(row: &SubscriptionRow, by: &str, reason: &str) -> AuditEvent {
    event(
        row,
        EventKind::WebhookRemoved,
        by,
        reason,
        json!({
            "resource": row.resource,
            "clio_webhook_id": row.clio_webhook_id,
        }),
    )
}

/// `why`: `unsigned`, `bad_signature`, `replay`, `second_handshake`, `not_enabled`,
/// `other_webhook`.
pub fn refused(row: &SubscriptionRow, why: &str, from: &str, unaudited_before: u64) -> AuditEvent {
    event(
        row,
        EventKind::WebhookDeliveryRefused,
        SOURCE,
        why,
        json!({
            "resource": row.resource,
            "clio_webhook_id": row.clio_webhook_id,
            "remote_address": from,
            // Refusals over the audited rate since the last audited one (only counted).
            "refusals_not_audited": unaudited_before,
        }),
    )
}

fn event(
    row: &SubscriptionRow,
    kind: EventKind,
    by: &str,
    reason: &str,
    payload: Value,
) -> AuditEvent {
    let read = row
        .resource
        .parse::<Resource>()
        .map(|r| r.required_scope())
        .ok();
    let scopes: Vec<Scope> = std::iter::once(WEBHOOKS_SCOPE).chain(read).collect();
    let tier = scopes
        .iter()
        .map(|s| s.risk_tier())
        .max()
        .unwrap_or(WEBHOOKS_SCOPE.risk_tier());
    AuditEvent {
        kind: kind as i32,
        tenant: row.tenant.clone(),
        actor: Some(crate::audit::actor(by)),
        subject: Some(Subject {
            kind: subject::Kind::Webhook as i32,
            id: row.subscription_id.to_string(),
        }),
        refs: Some(EventRefs {
            connection_id: row.connection_id.clone(),
            clio_account_id: row.clio_account_id.clone(),
            principal: row.principal.clone(),
            ..EventRefs::default()
        }),
        scopes: scopes.iter().map(|s| s.to_wire()).collect(),
        risk_tier: RiskTier::from(tier) as i32,
        reason: reason.to_owned(),
        payload_json: payload.to_string(),
        source: SOURCE.to_owned(),
        ..AuditEvent::default()
    }
}
