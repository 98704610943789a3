//! The compliance views, answered from the projections (see migration 0004).
//!
//! Tiers, "full account access" and write scopes come from the scope catalogue
//! (`scope-catalog`) at report time, so a catalogue change shows in every report at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use proto::audit::v1 as api;
use scope_catalog::{RiskTier, Scope, ScopeSet};
use sqlx::PgPool;

use crate::error::AuditError;
use proto::time::timestamp;

use crate::event::region_from_name;

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
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
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

pub async fn connections(pool: &PgPool, tenant: &str) -> Result<Vec<ConnectionRow>, AuditError> {
    Ok(sqlx::query_as(
        "SELECT tenant, connection_id, app_id, principal, clio_user_id, clio_account_id, region, \
         scopes, granted_at, last_used_at, revoked_at \
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

mod offboarding;
pub use offboarding::offboarding;

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
