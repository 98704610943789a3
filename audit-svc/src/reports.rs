//! The compliance views, answered from the projections (see migration 0004).
//!
//! Tiers, "full account access" and write scopes come from the scope catalogue
//! (`scope-catalog`) at report time, so a catalogue change shows in every report at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use proto::audit::v1 as api;
use scope_catalog::{RiskTier, Scope, ScopeSet};
use sqlx::PgPool;

use crate::error::AuditError;
use proto::time::timestamp;

use crate::event::region_from_name;
use crate::validation::Bounds;

/// A connection as the projection holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub tenant: String,
    pub connection_id: String,
    pub app_id: String,
    pub principal: String,
    pub clio_user_id: String,
    pub clio_account_id: String,
    pub region: String,
    pub scopes: Vec<String>,
    pub granted_at: Option<DateTime<Utc>>,
    pub first_granted_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub clio_outcome: Option<String>,
}

/// Stored scope strings as a set (the log only ever holds catalogue scopes).
pub fn scope_set(scopes: &[String]) -> ScopeSet {
    scopes
        .iter()
        .filter_map(|s| s.parse::<Scope>().ok())
        .collect()
}

impl ConnectionRow {
    /// Granted and not revoked.
    pub fn is_live(&self) -> bool {
        self.granted_at.is_some() && self.revoked_at.is_none()
    }

    pub fn scope_set(&self) -> ScopeSet {
        scope_set(&self.scopes)
    }

    pub fn summary(&self) -> api::ConnectionSummary {
        let scopes = self.scope_set();
        api::ConnectionSummary {
            connection_id: self.connection_id.clone(),
            tenant: self.tenant.clone(),
            app_id: self.app_id.clone(),
            principal: self.principal.clone(),
            clio_user_id: self.clio_user_id.clone(),
            clio_account_id: self.clio_account_id.clone(),
            region: region_from_name(&self.region) as i32,
            scopes: scopes.to_wire(),
            risk_tier: proto::common::v1::RiskTier::from(scopes.risk_tier()) as i32,
            granted_at: self.granted_at.map(timestamp),
            last_used_at: self.last_used_at.map(timestamp),
            full_account_access: scopes.is_full_account_access(),
            revoked: self.revoked_at.is_some(),
        }
    }
}

/// Whether Clio's answer to a revocation means the grant may still be live there.
pub fn clio_revocation_failed(outcome: &str) -> bool {
    outcome.starts_with("failed") || outcome == "gave_up"
}

pub async fn connections(pool: &PgPool, tenant: &str) -> Result<Vec<ConnectionRow>, AuditError> {
    Ok(sqlx::query_as(
        "SELECT tenant, connection_id, app_id, principal, clio_user_id, clio_account_id, region, \
         scopes, granted_at, first_granted_at, last_used_at, revoked_at, clio_outcome \
         FROM proj_connections WHERE tenant = $1 ORDER BY connection_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Live connections grouped by tier, highest tier first.
pub async fn by_risk_tier(
    pool: &PgPool,
    tenant: &str,
    min_tier: Option<RiskTier>,
) -> Result<Vec<api::TierGroup>, AuditError> {
    let mut groups: BTreeMap<std::cmp::Reverse<RiskTier>, Vec<api::ConnectionSummary>> =
        BTreeMap::new();
    for row in connections(pool, tenant).await? {
        let tier = row.scope_set().risk_tier();
        if row.is_live() && min_tier.is_none_or(|min| tier >= min) {
            groups
                .entry(std::cmp::Reverse(tier))
                .or_default()
                .push(row.summary());
        }
    }
    Ok(groups
        .into_iter()
        .map(|(tier, connections)| api::TierGroup {
            tier: proto::common::v1::RiskTier::from(tier.0) as i32,
            connections,
        })
        .collect())
}

#[derive(Debug, sqlx::FromRow)]
struct AppRow {
    app_id: String,
    declared_scopes: Vec<String>,
}

async fn apps(pool: &PgPool, tenant: &str) -> Result<Vec<AppRow>, AuditError> {
    Ok(sqlx::query_as(
        "SELECT app_id, declared_scopes FROM proj_apps WHERE tenant = $1 ORDER BY app_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Apps whose declaration is every family at write (the seed's Mistake #1).
pub async fn full_access_apps(
    pool: &PgPool,
    tenant: &str,
) -> Result<Vec<api::AppSummary>, AuditError> {
    let connections = connections(pool, tenant).await?;
    Ok(apps(pool, tenant)
        .await?
        .into_iter()
        .filter_map(|app| {
            let declared = scope_set(&app.declared_scopes);
            declared.is_full_account_access().then(|| {
                let live = connections
                    .iter()
                    .filter(|c| c.app_id == app.app_id && c.is_live())
                    .count();
                api::AppSummary {
                    app_id: app.app_id,
                    declared_scopes: declared.to_wire(),
                    risk_tier: proto::common::v1::RiskTier::from(declared.risk_tier()) as i32,
                    full_account_access: true,
                    live_connections: u32::try_from(live).unwrap_or(u32::MAX),
                }
            })
        })
        .collect())
}

/// Live connections holding a write scope, and any connection that performed writes,
/// with how many of the writes had a matching earlier approval.
pub async fn write_capable(
    pool: &PgPool,
    tenant: &str,
) -> Result<Vec<api::WriteCapableConnection>, AuditError> {
    // A write counts as approved when an approval with its id was recorded for the same
    // connection before it; the others are listed by event id so they can be looked up.
    let counts: Vec<(String, i64, i64, Vec<String>)> = sqlx::query_as(
        "SELECT w.connection_id, count(*), count(*) FILTER (WHERE w.approved), \
                coalesce(array_agg(e.event_id::text ORDER BY w.sequence) \
                         FILTER (WHERE NOT w.approved), '{}') \
         FROM (SELECT w.*, (w.approval_id <> '' AND EXISTS ( \
                   SELECT 1 FROM proj_write_approvals a WHERE a.tenant = w.tenant \
                   AND a.connection_id = w.connection_id AND a.approval_id = w.approval_id \
                   AND a.sequence < w.sequence)) AS approved \
               FROM proj_writes w WHERE w.tenant = $1) AS w \
         JOIN events e ON e.tenant = w.tenant AND e.sequence = w.sequence \
         GROUP BY w.connection_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut counts: HashMap<String, (u32, u32, Vec<String>)> = counts
        .into_iter()
        .map(|(id, performed, approved, unapproved)| {
            let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
            (id, (n(performed), n(approved), unapproved))
        })
        .collect();
    Ok(connections(pool, tenant)
        .await?
        .into_iter()
        .filter_map(|row| {
            let writes = row.scope_set().write_scopes();
            let (performed, approved, unapproved) =
                counts.remove(&row.connection_id).unwrap_or_default();
            ((row.is_live() && !writes.is_empty()) || performed > 0).then(|| {
                api::WriteCapableConnection {
                    connection: Some(row.summary()),
                    write_scopes: writes.iter().map(|s| s.to_wire()).collect(),
                    writes_performed: performed,
                    writes_approved: approved,
                    writes_unapproved: performed - approved,
                    unapproved_write_event_ids: unapproved,
                }
            })
        })
        .collect())
}

/// Live connections with no token use (or, never used, no grant) for `idle_days`.
pub async fn zombies(
    pool: &PgPool,
    tenant: &str,
    idle_days: u32,
    as_of: DateTime<Utc>,
) -> Result<Vec<api::ZombieConnection>, AuditError> {
    let mut found: Vec<(i64, api::ZombieConnection)> = connections(pool, tenant)
        .await?
        .into_iter()
        .filter(ConnectionRow::is_live)
        .filter_map(|row| {
            let since = row.last_used_at.or(row.granted_at)?;
            let idle = (as_of - since).num_days();
            (idle >= i64::from(idle_days)).then(|| {
                let zombie = api::ZombieConnection {
                    connection: Some(row.summary()),
                    idle_days: u32::try_from(idle).unwrap_or(u32::MAX),
                };
                (idle, zombie)
            })
        })
        .collect();
    found.sort_by_key(|(idle, _)| std::cmp::Reverse(*idle));
    Ok(found.into_iter().map(|(_, zombie)| zombie).collect())
}

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
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(offboardings
        .into_iter()
        .map(|(principal, offboarded_at, payload)| {
            let departed_at = payload_time(&payload, "departed_at").unwrap_or(offboarded_at);
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
                for c in connections.iter().filter(|c| c.principal == principal) {
                    let revoked_since = trails.get(&c.connection_id).is_some_and(|list| {
                        list.iter().any(|t| t.revoked_at >= offboarded_at)
                    });
                    if revoked_since {
                        named.push((c.connection_id.clone(), String::new(), String::new()));
                    }
                }
            }
            let live: Vec<String> = connections
                .iter()
                .filter(|c| c.principal == principal && c.is_live())
                .map(|c| c.connection_id.clone())
                .collect();
            for id in &live {
                if !named.iter().any(|(c, _, _)| c == id) {
                    named.push((id.clone(), "live".into(), "not revoked".into()));
                }
            }
            named.sort();
            let rows: Vec<api::OffboardedConnection> = named
                .into_iter()
                .map(|(id, seen, seen_detail)| {
                    // The revocation this offboarding caused: the first one at or after it.
                    let trail = trails.get(&id).and_then(|list| {
                        list.iter().find(|t| t.revoked_at >= offboarded_at).cloned()
                    });
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
                })
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
            let gave_up = rows.iter().filter(|c| c.clio_outcome == "gave_up").count();
            let errors = rows.iter().filter(|c| c.clio_outcome == "error").count();
            let retries: u32 = rows.iter().map(|c| c.deauthorize_retries).sum();
            let took = last_confirmation.unwrap_or(now) - departed_at;
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
                    rows.len() - confirmed.len(),
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
            let to_revocation = last_revocation.map(|at| at - departed_at).unwrap_or_default();
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
        })
        .collect())
}

/// Live connections whose grant differs from their app's current declaration.
pub async fn scope_drift(
    pool: &PgPool,
    tenant: &str,
) -> Result<Vec<api::DriftedConnection>, AuditError> {
    let declared: HashMap<String, ScopeSet> = apps(pool, tenant)
        .await?
        .into_iter()
        .map(|app| (app.app_id, scope_set(&app.declared_scopes)))
        .collect();
    Ok(connections(pool, tenant)
        .await?
        .into_iter()
        .filter(ConnectionRow::is_live)
        .filter_map(|row| {
            let app = declared.get(&row.app_id)?;
            let granted = row.scope_set();
            let missing: Vec<_> = app
                .iter()
                .filter(|s| !granted.covers(s))
                .map(|s| s.to_wire())
                .collect();
            let beyond: Vec<_> = granted
                .iter()
                .filter(|s| !app.covers(s))
                .map(|s| s.to_wire())
                .collect();
            (!missing.is_empty() || !beyond.is_empty()).then(|| api::DriftedConnection {
                connection: Some(row.summary()),
                app_declared_scopes: app.to_wire(),
                missing_from_grant: missing,
                beyond_declaration: beyond,
            })
        })
        .collect())
}

/// Clio logins several people have live connections as, or that a person was refused
/// because another person had it connected (auth-svc's `shared_clio_login` refusals).
pub async fn shared_logins(
    pool: &PgPool,
    tenant: &str,
) -> Result<Vec<api::SharedLogin>, AuditError> {
    #[derive(Default)]
    struct Login {
        live: BTreeSet<String>,
        connection_ids: Vec<String>,
        refused: BTreeSet<String>,
        attempts: u32,
    }
    let mut by_login: BTreeMap<(String, String), Login> = BTreeMap::new();
    for row in connections(pool, tenant).await? {
        if row.is_live() && !row.clio_user_id.is_empty() && !row.principal.is_empty() {
            let login = by_login
                .entry((row.clio_user_id.clone(), row.clio_account_id.clone()))
                .or_default();
            login.live.insert(row.principal.clone());
            login.connection_ids.push(row.connection_id.clone());
        }
    }
    let refusals: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT clio_user_id, clio_account_id, principal FROM events \
         WHERE tenant = $1 AND kind = $2 AND payload->>'refused' = 'shared_clio_login' \
           AND clio_user_id <> '' AND principal <> ''",
    )
    .bind(tenant)
    .bind(crate::event::kind_name(
        proto::common::v1::EventKind::AccessDenied,
    ))
    .fetch_all(pool)
    .await?;
    for (clio_user_id, clio_account_id, principal) in refusals {
        let login = by_login.entry((clio_user_id, clio_account_id)).or_default();
        login.refused.insert(principal);
        login.attempts += 1;
    }
    Ok(by_login
        .into_iter()
        .filter(|(_, login)| login.live.len() > 1 || login.attempts > 0)
        .map(
            |((clio_user_id, clio_account_id), login)| api::SharedLogin {
                clio_user_id,
                clio_account_id,
                principals: login.live.union(&login.refused).cloned().collect(),
                connection_ids: login.connection_ids,
                refused_principals: login.refused.into_iter().collect(),
                refused_attempts: login.attempts,
            },
        )
        .collect())
}
