//! Billing suggestions: a lawyer (their own) or a billing approver (their firm's) approves
//! each one, as suggested or edited, or rejects it with a reason; one click each. Only an
//! approved suggestion is ever written to Clio, by import-svc.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use proto::suggestions::v1::{
    ApproveSuggestionRequest, ListSuggestionsRequest, RejectSuggestionRequest, SuggestionStatus,
};
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, done, notice, render};
use crate::AppState;
use crate::backends::IMPORT;
use crate::display;
use crate::error::PageError;

pub struct SuggestionRow {
    pub suggestion_id: String,
    pub connection_id: String,
    pub status: String,
    pub pending: bool,
    pub date: String,
    pub matter_id: i64,
    pub user_id: i64,
    pub minutes: i64,
    pub description: String,
    pub decided: String,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "suggestions.html")]
struct SuggestionsPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    status: String,
    suggestions: Vec<SuggestionRow>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// "pending" (the default), "all", or another status's name.
    status: Option<String>,
    done: Option<String>,
}

fn status_filter(status: &str) -> Result<SuggestionStatus, PageError> {
    Ok(match status {
        "all" => SuggestionStatus::Unspecified,
        "pending" => SuggestionStatus::Pending,
        "approved" => SuggestionStatus::Approved,
        "written" => SuggestionStatus::Written,
        "rejected" => SuggestionStatus::Rejected,
        "failed" => SuggestionStatus::Failed,
        "cancelled" => SuggestionStatus::Cancelled,
        _ => {
            return Err(PageError::bad_request(
                "status must be all, pending, approved, written, rejected, failed or cancelled",
            ));
        }
    })
}

fn require_billing(signed: &Signed, to: &str) -> Result<(), PageError> {
    signed
        .require(Role::BillingReviewer, to)
        .or_else(|_| signed.require(Role::BillingApprover, to))
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let status = query.status.unwrap_or_else(|| "pending".into());
    let answer = state
        .backends
        .suggestions(&signed.0.person)
        .list_suggestions(ListSuggestionsRequest {
            status: status_filter(&status)? as i32,
            page_size: 200,
            ..ListSuggestionsRequest::default()
        })
        .await
        .map_err(|s| PageError::from_status(IMPORT, &s))?
        .into_inner();
    let suggestions = answer
        .suggestions
        .into_iter()
        .map(|s| SuggestionRow {
            pending: s.status == SuggestionStatus::Pending as i32,
            status: display::suggestion_status(s.status),
            minutes: s.quantity_secs / 60,
            decided: if s.decided_by.is_empty() {
                String::new()
            } else {
                format!(
                    "{} at {}",
                    s.decided_by,
                    display::when(s.decided_at.as_ref())
                )
            },
            outcome: match (
                s.clio_activity_id,
                s.rejection_reason.is_empty(),
                s.error.is_empty(),
            ) {
                (id, _, _) if id > 0 => format!("written to Clio as activity {id}"),
                (_, false, _) => format!("rejected: {}", s.rejection_reason),
                (_, _, false) => s.error.clone(),
                _ => String::new(),
            },
            suggestion_id: s.suggestion_id,
            connection_id: s.connection_id,
            date: s.date,
            matter_id: s.matter_id,
            user_id: s.user_id,
            description: s.description,
        })
        .collect();
    render(&SuggestionsPage {
        chrome: signed.chrome("suggestions"),
        notice: notice(query.done.as_deref()),
        status,
        suggestions,
    })
}

#[derive(Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    csrf: String,
    /// As shown (the suggestion's own, unless the person edited it).
    minutes: Option<i64>,
    #[serde(default)]
    description: String,
}

pub async fn approve(
    State(state): State<AppState>,
    signed: Signed,
    Path(suggestion_id): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    require_billing(&signed, "Approving billing suggestions")?;
    let quantity_secs = match form.minutes {
        Some(minutes) if minutes > 0 => minutes
            .checked_mul(60)
            .ok_or_else(|| PageError::bad_request("minutes: too large"))?,
        Some(_) => return Err(PageError::bad_request("minutes: must be more than 0")),
        None => 0,
    };
    state
        .backends
        .suggestions(&signed.0.person)
        .approve_suggestion(ApproveSuggestionRequest {
            suggestion_id,
            quantity_secs,
            description: form.description.trim().to_owned(),
        })
        .await
        .map_err(|s| PageError::from_status(IMPORT, &s))?;
    Ok(done("/suggestions", "approved"))
}

#[derive(Deserialize)]
pub struct RejectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub async fn reject(
    State(state): State<AppState>,
    signed: Signed,
    Path(suggestion_id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    require_billing(&signed, "Rejecting billing suggestions")?;
    state
        .backends
        .suggestions(&signed.0.person)
        .reject_suggestion(RejectSuggestionRequest {
            suggestion_id,
            reason: form.reason.trim().to_owned(),
        })
        .await
        .map_err(|s| PageError::from_status(IMPORT, &s))?;
    Ok(done("/suggestions", "rejected"))
}
