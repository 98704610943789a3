//! Connections: filtered by person, app and status; an operator revokes one with a reason
//! (at Clio and here, recorded as that operator).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use proto::auth::v1::{ConnectionStatus, ListConnectionsRequest, RevokeConnectionRequest};
use proto::common::v1::{PageRequest, RiskTier};
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, done, notice, render};
use crate::AppState;
use crate::backends::AUTH;
use crate::display;
use crate::error::PageError;

/// Connections a page shows (about: a tier filter shows every match of the pages it read);
/// the next ones are a link away.
const PAGE_SIZE: u32 = 100;
/// Pages of auth-svc's list one request reads at most looking for a tier's connections.
const SCAN_PAGES: usize = 20;

pub struct ConnectionRow {
    pub connection_id: String,
    pub principal: String,
    pub app_id: String,
    pub tenant: String,
    pub tier: String,
    pub scopes: String,
    pub status: String,
    pub active: bool,
    pub drifted: bool,
    pub granted_at: String,
    pub last_used_at: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    filter: Filter,
    connections: Vec<ConnectionRow>,
    /// The link to the next page, filters kept.
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    pub principal: String,
    #[serde(default)]
    pub app_id: String,
    /// "", "active", "needs_reconnect" or "revoked".
    #[serde(default)]
    pub status: String,
    /// "", "low", "medium", "high" or "very_high".
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub page_token: String,
    pub done: Option<String>,
}

fn tier_filter(tier: &str) -> Result<Option<RiskTier>, PageError> {
    Ok(match tier {
        "" => None,
        "low" => Some(RiskTier::Low),
        "medium" => Some(RiskTier::Medium),
        "high" => Some(RiskTier::High),
        "very_high" => Some(RiskTier::VeryHigh),
        _ => {
            return Err(PageError::bad_request(
                "tier must be low, medium, high or very_high",
            ));
        }
    })
}

fn status_filter(status: &str) -> Result<ConnectionStatus, PageError> {
    Ok(match status {
        "" => ConnectionStatus::Unspecified,
        "active" => ConnectionStatus::Active,
        "needs_reconnect" => ConnectionStatus::NeedsReconnect,
        "revoked" => ConnectionStatus::Revoked,
        _ => {
            return Err(PageError::bad_request(
                "status must be active, needs_reconnect or revoked",
            ));
        }
    })
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(filter): Query<Filter>,
) -> Result<Html<String>, PageError> {
    let tier = tier_filter(&filter.tier)?;
    let mut client = state.backends.auth(&signed.0.person);
    let mut found = Vec::new();
    let mut page_token = filter.page_token.clone();
    // auth-svc filters by person, app and status; the tier is filtered here, reading on
    // until a page's worth matches (at most SCAN_PAGES pages a request).
    for _ in 0..SCAN_PAGES {
        let answer = client
            .list_connections(ListConnectionsRequest {
                principal: filter.principal.trim().to_owned(),
                app_id: filter.app_id.trim().to_owned(),
                status: status_filter(&filter.status)? as i32,
                page: Some(PageRequest {
                    page_size: PAGE_SIZE,
                    page_token,
                }),
                ..ListConnectionsRequest::default()
            })
            .await
            .map_err(|s| PageError::from_status(AUTH, &s))?
            .into_inner();
        found.extend(
            answer
                .connections
                .into_iter()
                .filter(|c| tier.is_none_or(|t| c.risk_tier == t as i32)),
        );
        page_token = answer.page.map(|p| p.next_page_token).unwrap_or_default();
        if tier.is_none() || page_token.is_empty() || found.len() >= PAGE_SIZE as usize {
            break;
        }
    }
    let connections = found
        .into_iter()
        .map(|c| ConnectionRow {
            active: c.status == ConnectionStatus::Active as i32,
            status: display::connection_status(c.status),
            tier: display::tier(c.risk_tier),
            scopes: display::scopes(&c.granted_scopes),
            drifted: c.drifted,
            granted_at: display::when(c.granted_at.as_ref()),
            last_used_at: display::when(c.last_used_at.as_ref()),
            revoked: display::revocation(&c),
            connection_id: c.connection_id,
            principal: c.principal,
            app_id: c.app_id,
            tenant: c.tenant,
        })
        .collect();
    let next = Some(page_token).filter(|t| !t.is_empty()).map(|token| {
        let query = [
            ("principal", filter.principal.as_str()),
            ("app_id", filter.app_id.as_str()),
            ("status", filter.status.as_str()),
            ("tier", filter.tier.as_str()),
            ("page_token", token.as_str()),
        ];
        super::query_string("/connections", &query)
    });
    render(&ConnectionsPage {
        chrome: signed.chrome("connections"),
        notice: notice(filter.done.as_deref()),
        connections,
        next,
        filter,
    })
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub async fn revoke(
    State(state): State<AppState>,
    signed: Signed,
    Path(connection_id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    signed.require(Role::Operator, "Revoking a connection")?;
    let reason = form.reason.trim();
    if reason.is_empty() {
        return Err(PageError::bad_request(
            "reason: say why the connection is revoked; it goes into the audit log",
        ));
    }
    state
        .backends
        .auth(&signed.0.person)
        .revoke_connection(RevokeConnectionRequest {
            connection_id,
            reason: reason.to_owned(),
        })
        .await
        .map_err(|s| PageError::from_status(AUTH, &s))?;
    Ok(done("/connections", "revoked"))
}
