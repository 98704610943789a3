//! Connections: the loaded shape, its wire and audit forms, and the list filter (their SQL
//! is in `store::connections`).

use chrono::{DateTime, Utc};
use clio_api::Region;
use proto::auth::v1 as pb;
use proto::common::v1::{EventKind, EventRefs, subject};
use scope_catalog::ScopeSet;

use crate::apps::region_field;
use proto::time::timestamp;

use crate::audit_events::{EventBuilder, subject_of};
use crate::context::Context;
use crate::domain::{AppId, ConnectionId, ConnectionStatus};
use crate::error::AuthError;
use crate::paging::Page;
use crate::store;
use crate::wire_region;

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
    /// The app's Clio client id.
    pub app_client_id: String,
}

pub async fn get(ctx: &Context, id: ConnectionId) -> Result<Connection, AuthError> {
    store::connections::load(&ctx.pool, id).await
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
            region: wire_region::to_wire(self.region) as i32,
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
            region: wire_region::to_wire(self.region) as i32,
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
    let connections = store::connections::list(&ctx.pool, &filter, &page).await?;
    Ok(page.finish(connections, |c| c.id.0))
}
