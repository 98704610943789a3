//! One connection: who granted what through which app and as which Clio user, when it
//! was last used, and (for compliance) its whole history from the audit log, consent
//! record first.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Html;
use proto::audit::v1::QueryRequest;
use proto::auth::v1::{ConnectionStatus, GetConnectionRequest};
use proto::common::v1::{PageRequest, Subject, subject};
use service_runtime::Role;

use super::audit::EventRow;
use super::{Chrome, Signed, render};
use crate::AppState;
use crate::backends::{AUDIT, AUTH};
use crate::display;
use crate::error::PageError;

/// The events a detail page shows at most (newest first).
const HISTORY: u32 = 200;

#[derive(Template)]
#[template(path = "connection.html")]
struct ConnectionPage {
    chrome: Chrome,
    connection_id: String,
    principal: String,
    tenant: String,
    app_id: String,
    clio_user: String,
    clio_account: String,
    tier: String,
    scopes: String,
    status: String,
    active: bool,
    drifted: bool,
    granted_at: String,
    last_used_at: String,
    token_expires_at: String,
    revoked: String,
    /// None without the compliance role (the audit log is theirs).
    history: Option<Vec<EventRow>>,
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(connection_id): Path<String>,
) -> Result<Html<String>, PageError> {
    let person = &signed.0.person;
    let c = state
        .backends
        .auth(person)
        .get_connection(GetConnectionRequest {
            connection_id: connection_id.clone(),
        })
        .await
        .map_err(|s| PageError::from_status(AUTH, &s))?
        .into_inner();
    let history = if person.has(Role::Compliance) {
        let events = state
            .backends
            .audit(person)
            .query(QueryRequest {
                tenant: c.tenant.clone(),
                subject: Some(Subject {
                    kind: subject::Kind::Connection as i32,
                    id: connection_id.clone(),
                }),
                newest_first: true,
                page: Some(PageRequest {
                    page_size: HISTORY,
                    page_token: String::new(),
                }),
                ..QueryRequest::default()
            })
            .await
            .map_err(|s| PageError::from_status(AUDIT, &s))?
            .into_inner()
            .events;
        Some(events.into_iter().map(EventRow::from).collect())
    } else {
        None
    };
    let revoked = display::revocation(&c);
    let clio = c.clio.clone().unwrap_or_default();
    render(&ConnectionPage {
        chrome: signed.chrome("connections"),
        clio_user: format!(
            "{} <{}> (Clio user {})",
            clio.user_name, clio.user_email, clio.user_id
        ),
        clio_account: format!("{} (account {})", clio.account_name, clio.account_id),
        tier: display::tier(c.risk_tier),
        scopes: display::scopes(&c.granted_scopes),
        active: c.status == ConnectionStatus::Active as i32,
        status: display::connection_status(c.status),
        drifted: c.drifted,
        granted_at: display::when(c.granted_at.as_ref()),
        last_used_at: display::when(c.last_used_at.as_ref()),
        token_expires_at: display::when(c.access_token_expires_at.as_ref()),
        revoked,
        connection_id: c.connection_id,
        principal: c.principal,
        tenant: c.tenant,
        app_id: c.app_id,
        history,
    })
}
