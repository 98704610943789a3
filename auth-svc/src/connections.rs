//! Connections as stored: loading, listing, and their wire and audit shapes.

use chrono::{DateTime, Utc};
use clio_api::Region;
use proto::auth::v1 as pb;
use proto::common::v1::{EventKind, EventRefs, subject};
use scope_catalog::ScopeSet;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::apps::region_field;
use crate::audit_events::{EventBuilder, subject_of, timestamp};
use crate::context::Context;
use crate::domain::{AppId, ConnectionId, ConnectionStatus};
use crate::error::AuthError;
use crate::paging::Page;
use crate::token_vault::Binding;

pub const ACCESS_TOKEN: (&str, &str) = ("connections", "access_token");
pub const REFRESH_TOKEN: (&str, &str) = ("connections", "refresh_token");

pub fn access_binding(id: ConnectionId) -> Binding {
    Binding::new(ACCESS_TOKEN.0, ACCESS_TOKEN.1, id)
}

pub fn refresh_binding(id: ConnectionId) -> Binding {
    Binding::new(REFRESH_TOKEN.0, REFRESH_TOKEN.1, id)
}

/// A connection row, with its app's current declared scopes (to tell drift).
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant: String,
    pub app_id: AppId,
    pub principal: String,
    pub region: Region,
    pub clio_user_id: String,
    pub clio_user_name: String,
    pub clio_user_email: String,
    pub clio_account_id: String,
    pub clio_account_name: String,
    pub granted: ScopeSet,
    pub granted_version: u32,
    pub status: ConnectionStatus,
    pub access_token_ct: Option<Vec<u8>>,
    pub refresh_token_ct: Option<Vec<u8>>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub token_lifetime_secs: Option<i64>,
    pub token_version: i64,
    pub granted_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub revocation_reason: Option<String>,
    pub app_declared: ScopeSet,
}

#[derive(FromRow)]
struct ConnectionRow {
    connection_id: Uuid,
    tenant: String,
    app_id: Uuid,
    principal: String,
    region: String,
    clio_user_id: String,
    clio_user_name: String,
    clio_user_email: String,
    clio_account_id: String,
    clio_account_name: String,
    granted_scopes: Json<ScopeSet>,
    granted_scopes_version: i32,
    status: String,
    access_token_ct: Option<Vec<u8>>,
    refresh_token_ct: Option<Vec<u8>>,
    access_expires_at: Option<DateTime<Utc>>,
    token_lifetime_secs: Option<i64>,
    token_version: i64,
    granted_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<String>,
    revocation_reason: Option<String>,
    app_declared: Json<crate::domain::DeclaredScopes>,
}

const SELECT: &str = "SELECT c.connection_id, c.tenant, c.app_id, c.principal, c.region, c.clio_user_id, \
     c.clio_user_name, c.clio_user_email, c.clio_account_id, c.clio_account_name, c.granted_scopes, \
     c.granted_scopes_version, c.status, c.access_token_ct, c.refresh_token_ct, c.access_expires_at, \
     c.token_lifetime_secs, c.token_version, c.granted_at, c.last_used_at, c.revoked_at, c.revoked_by, \
     c.revocation_reason, a.declared_scopes AS app_declared \
     FROM connections c JOIN app_registrations a ON a.app_id = c.app_id";

impl TryFrom<ConnectionRow> for Connection {
    type Error = AuthError;

    fn try_from(row: ConnectionRow) -> Result<Self, AuthError> {
        Ok(Connection {
            id: ConnectionId(row.connection_id),
            tenant: row.tenant,
            app_id: AppId(row.app_id),
            principal: row.principal,
            region: row.region.parse().map_err(|e| {
                AuthError::Internal(format!("connection {}: {e}", row.connection_id))
            })?,
            clio_user_id: row.clio_user_id,
            clio_user_name: row.clio_user_name,
            clio_user_email: row.clio_user_email,
            clio_account_id: row.clio_account_id,
            clio_account_name: row.clio_account_name,
            granted: row.granted_scopes.0,
            granted_version: u32::try_from(row.granted_scopes_version).unwrap_or(0),
            status: row.status.parse()?,
            access_token_ct: row.access_token_ct,
            refresh_token_ct: row.refresh_token_ct,
            access_expires_at: row.access_expires_at,
            token_lifetime_secs: row.token_lifetime_secs,
            token_version: row.token_version,
            granted_at: row.granted_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
            revocation_reason: row.revocation_reason,
            app_declared: row.app_declared.0.scope_set(),
        })
    }
}

/// Loads one connection; `FOR UPDATE` of the connection row when `lock`.
pub async fn load(
    conn: &mut PgConnection,
    id: ConnectionId,
    lock: bool,
) -> Result<Connection, AuthError> {
    let sql = format!(
        "{SELECT} WHERE c.connection_id = $1{}",
        if lock { " FOR UPDATE OF c" } else { "" }
    );
    let row: Option<ConnectionRow> = sqlx::query_as(&sql).bind(id.0).fetch_optional(conn).await?;
    row.ok_or_else(|| AuthError::NotFound(format!("connection {id}")))?
        .try_into()
}

pub async fn get(ctx: &Context, id: ConnectionId) -> Result<Connection, AuthError> {
    let mut conn = ctx.pool.acquire().await?;
    load(&mut conn, id, false).await
}

impl Connection {
    /// The grant differs from what the app declares now.
    pub fn drifted(&self) -> bool {
        self.granted != self.app_declared
    }

    pub fn refs(&self) -> EventRefs {
        EventRefs {
            connection_id: self.id.to_string(),
            app_id: self.app_id.to_string(),
            principal: self.principal.clone(),
            clio_user_id: self.clio_user_id.clone(),
            clio_account_id: self.clio_account_id.clone(),
            job_id: String::new(),
            region: self.region.to_wire() as i32,
        }
    }

    /// An event about this connection, with its refs and grant.
    pub fn event(
        &self,
        kind: EventKind,
        actor: proto::common::v1::Actor,
        at: DateTime<Utc>,
    ) -> EventBuilder {
        EventBuilder::new(
            kind,
            &self.tenant,
            actor,
            subject_of(subject::Kind::Connection, self.id),
            at,
        )
        .refs(self.refs())
        .scopes(&self.granted)
    }

    pub fn to_wire(&self) -> pb::Connection {
        pb::Connection {
            connection_id: self.id.to_string(),
            tenant: self.tenant.clone(),
            app_id: self.app_id.to_string(),
            principal: self.principal.clone(),
            region: self.region.to_wire() as i32,
            clio: Some(pb::ClioIdentity {
                user_id: self.clio_user_id.clone(),
                user_name: self.clio_user_name.clone(),
                user_email: self.clio_user_email.clone(),
                account_id: self.clio_account_id.clone(),
                account_name: self.clio_account_name.clone(),
            }),
            granted_scopes: self.granted.to_wire(),
            granted_scopes_version: self.granted_version,
            risk_tier: proto::common::v1::RiskTier::from(self.granted.risk_tier()) as i32,
            status: status_to_wire(self.status) as i32,
            drifted: self.drifted(),
            granted_at: Some(timestamp(self.granted_at)),
            last_used_at: self.last_used_at.map(timestamp),
            access_token_expires_at: self.access_expires_at.map(timestamp),
            revoked_at: self.revoked_at.map(timestamp),
            revoked_by: self.revoked_by.clone().unwrap_or_default(),
            revocation_reason: self.revocation_reason.clone().unwrap_or_default(),
        }
    }
}

pub fn status_to_wire(status: ConnectionStatus) -> pb::ConnectionStatus {
    match status {
        ConnectionStatus::Active => pb::ConnectionStatus::Active,
        ConnectionStatus::NeedsReconnect => pb::ConnectionStatus::NeedsReconnect,
        ConnectionStatus::Revoked => pb::ConnectionStatus::Revoked,
    }
}

pub struct ConnectionFilter {
    pub tenant: Option<String>,
    pub app_id: Option<AppId>,
    pub principal: Option<String>,
    pub status: Option<ConnectionStatus>,
    pub region: Option<Region>,
}

impl TryFrom<&pb::ListConnectionsRequest> for ConnectionFilter {
    type Error = AuthError;

    fn try_from(request: &pb::ListConnectionsRequest) -> Result<Self, AuthError> {
        Ok(ConnectionFilter {
            tenant: (!request.tenant.is_empty()).then(|| request.tenant.clone()),
            app_id: match request.app_id.as_str() {
                "" => None,
                raw => Some(AppId::parse("app_id", raw)?),
            },
            principal: (!request.principal.is_empty()).then(|| request.principal.clone()),
            status: match pb::ConnectionStatus::try_from(request.status) {
                Ok(pb::ConnectionStatus::Unspecified) => None,
                Ok(pb::ConnectionStatus::Active) => Some(ConnectionStatus::Active),
                Ok(pb::ConnectionStatus::NeedsReconnect) => Some(ConnectionStatus::NeedsReconnect),
                Ok(pb::ConnectionStatus::Revoked) => Some(ConnectionStatus::Revoked),
                Err(_) => {
                    return Err(AuthError::invalid(
                        "status",
                        "not a known connection status",
                    ));
                }
            },
            region: match request.region {
                0 => None,
                value => Some(region_field("region", value)?),
            },
        })
    }
}

pub async fn list(
    ctx: &Context,
    filter: ConnectionFilter,
    page: Page,
) -> Result<(Vec<Connection>, proto::common::v1::PageResponse), AuthError> {
    let sql = format!(
        "{SELECT} WHERE ($1::text IS NULL OR c.tenant = $1) AND ($2::uuid IS NULL OR c.app_id = $2) \
           AND ($3::text IS NULL OR c.principal = $3) AND ($4::text IS NULL OR c.status = $4) \
           AND ($5::text IS NULL OR c.region = $5) AND ($6::uuid IS NULL OR c.connection_id > $6) \
         ORDER BY c.connection_id LIMIT $7"
    );
    let rows: Vec<ConnectionRow> = sqlx::query_as(&sql)
        .bind(filter.tenant)
        .bind(filter.app_id.map(|a| a.0))
        .bind(filter.principal)
        .bind(filter.status.map(ConnectionStatus::as_str))
        .bind(filter.region.map(Region::as_str))
        .bind(page.after)
        .bind(page.fetch_limit())
        .fetch_all(&ctx.pool)
        .await?;
    let connections = rows
        .into_iter()
        .map(Connection::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(connections, |c| c.id.0))
}
