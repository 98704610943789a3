//! Apps: every registration with its declared scopes and their justifications; a
//! compliance officer approves a pending one with a note.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use proto::auth::v1::{AppStatus, ApproveAppRequest, ListAppsRequest, RejectAppRequest};
use proto::common::v1::PageRequest;
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, done, notice, render};
use crate::AppState;
use crate::backends::AUTH;
use crate::display;
use crate::error::PageError;

/// An app as its row shows it.
pub struct AppRow {
    pub app_id: String,
    pub name: String,
    pub tenant: String,
    pub status: String,
    pub pending: bool,
    pub tier: String,
    pub full_access: bool,
    /// (scope, justification)
    pub scopes: Vec<(String, String)>,
    pub scopes_version: u32,
    pub registered_by: String,
    pub approved_by: String,
    /// "by <who>: <why>" while rejected.
    pub rejected: String,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    apps: Vec<AppRow>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    done: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let mut client = state.backends.auth(&signed.0.person);
    let mut apps = Vec::new();
    let mut page_token = String::new();
    // Every page of registrations (a firm has tens, not thousands).
    loop {
        let answer = client
            .list_apps(ListAppsRequest {
                page: Some(PageRequest {
                    page_size: 200,
                    page_token,
                }),
                ..ListAppsRequest::default()
            })
            .await
            .map_err(|s| PageError::from_status(AUTH, &s))?
            .into_inner();
        apps.extend(answer.apps.into_iter().map(|app| {
            AppRow {
                pending: app.status == AppStatus::PendingApproval as i32,
                status: display::app_status(app.status),
                tier: display::tier(app.risk_tier),
                full_access: app.full_account_access,
                scopes: app
                    .declared_scopes
                    .iter()
                    .map(|s| {
                        (
                            s.scope.as_ref().map(display::scope).unwrap_or_default(),
                            s.justification.clone(),
                        )
                    })
                    .collect(),
                scopes_version: app.scopes_version,
                app_id: app.app_id,
                name: app.name,
                tenant: app.tenant,
                rejected: if app.rejected_by.is_empty() {
                    String::new()
                } else {
                    format!("{}: {}", app.rejected_by, app.rejection_note)
                },
                registered_by: app.registered_by,
                approved_by: app.approved_by,
            }
        }));
        match answer.page {
            Some(page) if !page.next_page_token.is_empty() => page_token = page.next_page_token,
            _ => break,
        }
    }
    render(&AppsPage {
        chrome: signed.chrome("apps"),
        notice: notice(query.done.as_deref()),
        apps,
    })
}

/// A compliance officer's decision on a pending app.
#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
    /// The declaration the officer saw: the decision is refused if it changed since.
    scopes_version: u32,
}

pub async fn approve(
    State(state): State<AppState>,
    signed: Signed,
    Path(app_id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Result<Redirect, PageError> {
    decide(&state, &signed, app_id, form, true).await
}

pub async fn reject(
    State(state): State<AppState>,
    signed: Signed,
    Path(app_id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Result<Redirect, PageError> {
    decide(&state, &signed, app_id, form, false).await
}

/// A compliance officer's approval or rejection, as themselves.
async fn decide(
    state: &AppState,
    signed: &Signed,
    app_id: String,
    form: DecisionForm,
    approve: bool,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    signed.require(Role::Compliance, "Deciding on an app")?;
    let mut client = state.backends.auth(&signed.0.person);
    let (scopes_version, note) = (form.scopes_version, form.note);
    let answer = if approve {
        let request = ApproveAppRequest {
            app_id,
            scopes_version,
            note,
        };
        client.approve_app(request).await
    } else {
        let request = RejectAppRequest {
            app_id,
            scopes_version,
            note,
        };
        client.reject_app(request).await
    };
    answer.map_err(|s| PageError::from_status(AUTH, &s))?;
    Ok(done("/apps", if approve { "approved" } else { "rejected" }))
}
