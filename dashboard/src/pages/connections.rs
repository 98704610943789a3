//! Connections: filtered by person, app and status; an operator revokes one with a reason
//! (at Clio and here, recorded as that operator).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use proto::auth::v1::{ConnectionStatus, ListConnectionsRequest, RevokeConnectionRequest};
use proto::common::v1::PageRequest;
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, done, notice, render};
use crate::AppState;
use crate::backends::AUTH;
use crate::display;
use crate::error::PageError;

/// Connections a page shows at most; the next ones are a link away.
const PAGE_SIZE: u32 = 100;

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
    #[serde(default)]
    pub page_token: String,
    pub done: Option<String>,
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
    let answer = state
        .backends
        .auth(&signed.0.person)
        .list_connections(ListConnectionsRequest {
            principal: filter.principal.trim().to_owned(),
            app_id: filter.app_id.trim().to_owned(),
            status: status_filter(&filter.status)? as i32,
            page: Some(PageRequest {
                page_size: PAGE_SIZE,
                page_token: filter.page_token.clone(),
            }),
            ..ListConnectionsRequest::default()
        })
        .await
        .map_err(|s| PageError::from_status(AUTH, &s))?
        .into_inner();
    let connections = answer
        .connections
        .into_iter()
        .map(|c| ConnectionRow {
            active: c.status == ConnectionStatus::Active as i32,
            status: display::connection_status(c.status),
            tier: display::tier(c.risk_tier),
            scopes: display::scopes(&c.granted_scopes),
            drifted: c.drifted,
            granted_at: display::when(c.granted_at.as_ref()),
            last_used_at: display::when(c.last_used_at.as_ref()),
            revoked: if c.revoked_by.is_empty() {
                String::new()
            } else {
                format!(
                    "by {} at {}: {}",
                    c.revoked_by,
                    display::when(c.revoked_at.as_ref()),
                    c.revocation_reason
                )
            },
            connection_id: c.connection_id,
            principal: c.principal,
            app_id: c.app_id,
            tenant: c.tenant,
        })
        .collect();
    let next = answer
        .page
        .filter(|p| !p.next_page_token.is_empty())
        .map(|p| {
            let query = [
                ("principal", filter.principal.as_str()),
                ("app_id", filter.app_id.as_str()),
                ("status", filter.status.as_str()),
                ("page_token", p.next_page_token.as_str()),
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
