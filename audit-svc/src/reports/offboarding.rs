//! The offboarding report: each departed person's connections, when Clio confirmed each
//! revocation, the retries it took, and what is still open.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use proto::audit::v1 as api;
use proto::time::timestamp;
use sqlx::PgPool;

use super::{ConnectionRow, connections};
use crate::error::AuditError;
use crate::validation::Bounds;

/// One revocation of a connection as its events tell it: CONNECTION_REVOKED, then any
/// REVOCATION_RETRIED that followed it.
#[derive(Debug, Clone)]
struct RevocationTrail {
    revoked_at: DateTime<Utc>,
    outcome: String,
    detail: String,
    /// When Clio confirmed the grant is dead (`payload.clio_confirmed_at`, or the event's
    /// time for events recorded before producers sent it).
    confirmed_at: Option<DateTime<Utc>>,
    attempts: u32,
}

/// Whether an outcome means Clio holds no live grant any more.
fn clio_confirmed(outcome: &str) -> bool {
    matches!(outcome, "revoked" | "already_invalid" | "nothing_to_revoke")
}

fn payload_time(payload: &serde_json::Value, key: &str) -> Option<DateTime<Utc>> {
    payload
        .get(key)
        .and_then(serde_json::Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn payload_text(payload: &serde_json::Value, key: &str) -> String {
    payload
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Every revocation trail of the tenant's connections, in chain order.
async fn revocation_trails(
    pool: &PgPool,
    tenant: &str,
) -> Result<HashMap<String, Vec<RevocationTrail>>, AuditError> {
    let rows: Vec<(String, String, DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
        "SELECT kind, COALESCE(NULLIF(connection_id, ''), \
                CASE WHEN subject_kind = 'connection' THEN subject_id END, ''), \
                occurred_at, payload \
         FROM events WHERE tenant = $1 AND kind IN ('connection_revoked', 'revocation_retried') \
         ORDER BY sequence",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut trails: HashMap<String, Vec<RevocationTrail>> = HashMap::new();
    for (kind, connection, at, payload) in rows {
        let outcome = payload_text(&payload, "clio_outcome");
        let attempts = payload
            .get("attempts")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let confirmed_at = clio_confirmed(&outcome)
            .then(|| payload_time(&payload, "clio_confirmed_at").unwrap_or(at));
        let list = trails.entry(connection).or_default();
        if kind == "connection_revoked" {
            list.push(RevocationTrail {
                revoked_at: at,
                outcome,
                detail: payload_text(&payload, "detail"),
                confirmed_at,
                attempts: attempts.unwrap_or(1),
            });
        } else if let Some(last) = list.last_mut() {
            last.attempts = attempts.unwrap_or(last.attempts + 1).max(last.attempts);
            last.detail = payload_text(&payload, "detail");
            last.confirmed_at = last.confirmed_at.or(confirmed_at);
            last.outcome = outcome;
        }
    }
    Ok(trails)
}

/// Per offboarding in `range`: from the person's departure to Clio's confirmed
/// deauthorization of every connection, what failed, what is still open or live.
pub async fn offboarding(
    pool: &PgPool,
    tenant: &str,
    range: Bounds,
    limit: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<api::OffboardingEntry>, AuditError> {
    let offboardings: Vec<(String, DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
        "SELECT o.principal, o.offboarded_at, e.payload FROM proj_offboardings o \
         JOIN events e ON e.tenant = o.tenant AND e.sequence = o.sequence WHERE o.tenant = $1 \
         AND ($2::timestamptz IS NULL OR o.offboarded_at >= $2) \
         AND ($3::timestamptz IS NULL OR o.offboarded_at < $3) ORDER BY o.offboarded_at, o.sequence",
    )
    .bind(tenant)
    .bind(range.0)
    .bind(range.1)
    .fetch_all(pool)
    .await?;
    let connections = connections(pool, tenant).await?;
    let trails = revocation_trails(pool, tenant).await?;
    let context = OffboardingContext {
        connections: &connections,
        trails: &trails,
        limit,
        now,
    };
    Ok(offboardings
        .into_iter()
        .map(|(principal, offboarded_at, payload)| {
            offboarding_entry(&context, principal, offboarded_at, &payload)
        })
        .collect())
}

/// What every offboarding of a tenant is judged against.
struct OffboardingContext<'a> {
    connections: &'a [ConnectionRow],
    trails: &'a HashMap<String, Vec<RevocationTrail>>,
    /// How long after departure Clio may take to confirm the last deauthorization.
    limit: Duration,
    now: DateTime<Utc>,
}

/// The report entry of one offboarding (`payload` is its event's).
fn offboarding_entry(
    context: &OffboardingContext<'_>,
    principal: String,
    offboarded_at: DateTime<Utc>,
    payload: &serde_json::Value,
) -> api::OffboardingEntry {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let departed_at = payload_time(payload, "departed_at").unwrap_or(offboarded_at);
    let live: Vec<String> = context
        .connections
        .iter()
        .filter(|c| c.principal == principal && c.is_live())
        .map(|c| c.connection_id.clone())
        .collect();
    let rows: Vec<api::OffboardedConnection> =
        offboarded_connection_ids(context, &principal, offboarded_at, payload, &live)
            .into_iter()
            .map(|named| offboarded_connection(context, offboarded_at, &live, named))
            .collect();
    let confirmed: Vec<DateTime<Utc>> = rows
        .iter()
        .filter_map(|c| c.clio_confirmed_at.as_ref())
        .filter_map(proto::time::date_time)
        .collect();
    let open = confirmed.len() < rows.len();
    let revoked_times: Vec<DateTime<Utc>> = rows
        .iter()
        .filter_map(|c| c.revoked_at.as_ref())
        .filter_map(proto::time::date_time)
        .collect();
    let last_revocation = revoked_times.iter().max().copied();
    let last_confirmation = (!open).then(|| confirmed.iter().max().copied()).flatten();
    let unconfirmed_at_clio = rows
        .iter()
        .filter(|c| c.revoked_at.is_some() && c.clio_confirmed_at.is_none())
        .count();
    let retries: u32 = rows.iter().map(|c| c.deauthorize_retries).sum();
    let took = last_confirmation.unwrap_or(context.now) - departed_at;
    let reasons = flag_reasons(
        &rows,
        &live,
        confirmed.len(),
        last_confirmation,
        took,
        context.limit,
    );
    let to_revocation = last_revocation
        .map(|at| at - departed_at)
        .unwrap_or_default();
    api::OffboardingEntry {
        principal,
        offboarded_at: Some(timestamp(offboarded_at)),
        last_revocation_at: last_revocation.map(timestamp),
        seconds_to_last_revocation: u64::try_from(to_revocation.num_seconds()).unwrap_or(0),
        connections_revoked: n(revoked_times.len()),
        revocations_failed_at_clio: n(unconfirmed_at_clio),
        flagged: !reasons.is_empty(),
        flag_reasons: reasons,
        live_connection_ids: live,
        departed_at: Some(timestamp(departed_at)),
        last_clio_confirmation_at: last_confirmation.map(timestamp),
        seconds_to_clio_confirmation: u64::try_from(took.num_seconds()).unwrap_or(0),
        open,
        deauthorize_retries: retries,
        connections: rows,
    }
}

/// The connections an offboarding concerns, sorted, each with the Clio outcome and detail
/// the offboarding run saw (empty when it saw none).
fn offboarded_connection_ids(
    context: &OffboardingContext<'_>,
    principal: &str,
    offboarded_at: DateTime<Utc>,
    payload: &serde_json::Value,
    live: &[String],
) -> Vec<(String, String, String)> {
    // The connections the run names (with the outcome it saw), then any other
    // connection of the person still live.
    let mut named: Vec<(String, String, String)> = payload
        .get("connections")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| {
                    (
                        payload_text(c, "connection_id"),
                        payload_text(c, "clio_outcome"),
                        payload_text(c, "detail"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for id in payload
        .get("connection_ids")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
    {
        if !named.iter().any(|(c, _, _)| c == id) {
            named.push((id.to_owned(), String::new(), String::new()));
        }
    }
    // Events from before producers listed the connections: the person's connections
    // revoked at or after the offboarding.
    if payload.get("connections").is_none() && payload.get("connection_ids").is_none() {
        for c in context
            .connections
            .iter()
            .filter(|c| c.principal == principal)
        {
            let revoked_since = context
                .trails
                .get(&c.connection_id)
                .is_some_and(|list| list.iter().any(|t| t.revoked_at >= offboarded_at));
            if revoked_since {
                named.push((c.connection_id.clone(), String::new(), String::new()));
            }
        }
    }
    for id in live {
        if !named.iter().any(|(c, _, _)| c == id) {
            named.push((id.clone(), "live".into(), "not revoked".into()));
        }
    }
    named.sort();
    named
}

/// One connection of an offboarding: its revocation trail, or what the run saw.
fn offboarded_connection(
    context: &OffboardingContext<'_>,
    offboarded_at: DateTime<Utc>,
    live: &[String],
    (id, seen, seen_detail): (String, String, String),
) -> api::OffboardedConnection {
    // The revocation this offboarding caused: the first one at or after it.
    let trail = context
        .trails
        .get(&id)
        .and_then(|list| list.iter().find(|t| t.revoked_at >= offboarded_at).cloned());
    match trail {
        Some(t) if !live.contains(&id) => api::OffboardedConnection {
            connection_id: id,
            clio_outcome: t.outcome,
            revoked_at: Some(timestamp(t.revoked_at)),
            clio_confirmed_at: t.confirmed_at.map(timestamp),
            deauthorize_retries: t.attempts.saturating_sub(1),
            detail: t.detail,
        },
        _ => api::OffboardedConnection {
            clio_outcome: if live.contains(&id) && seen != "error" {
                "live".into()
            } else {
                seen
            },
            connection_id: id,
            revoked_at: None,
            clio_confirmed_at: None,
            deauthorize_retries: 0,
            detail: seen_detail,
        },
    }
}

/// Why an offboarding is flagged: too slow, given up or failed revocations, live
/// connections. Empty when it is not.
fn flag_reasons(
    rows: &[api::OffboardedConnection],
    live: &[String],
    confirmed: usize,
    last_confirmation: Option<DateTime<Utc>>,
    took: Duration,
    limit: Duration,
) -> Vec<String> {
    let open = confirmed < rows.len();
    let gave_up = rows.iter().filter(|c| c.clio_outcome == "gave_up").count();
    let errors = rows.iter().filter(|c| c.clio_outcome == "error").count();
    let mut reasons = Vec::new();
    match last_confirmation {
        Some(_) if took > limit => reasons.push(format!(
            "Clio confirmed the last deauthorization {} minutes after departure (limit {})",
            took.num_minutes(),
            limit.num_minutes()
        )),
        None if open && took > limit => reasons.push(format!(
            "{} minutes since departure and {} connection(s) not confirmed by Clio (limit {})",
            took.num_minutes(),
            rows.len() - confirmed,
            limit.num_minutes()
        )),
        _ => {}
    }
    if gave_up > 0 {
        reasons.push(format!("{gave_up} deauthorization(s) given up at Clio"));
    }
    if errors > 0 {
        reasons.push(format!(
            "{errors} revocation(s) failed in clio-connect (partial offboarding)"
        ));
    }
    if !live.is_empty() {
        reasons.push(format!("{} connection(s) still live", live.len()));
    }
    reasons
}
