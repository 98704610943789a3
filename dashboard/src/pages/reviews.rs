//! The quarterly access review: a compliance officer generates the quarter's review, each
//! connection is decided keep or revoke with a note by a reviewer other than the one who
//! generated it (audit-svc enforces it), and the attested review is exported as CSV or
//! printed from the page.

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Datelike;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use proto::audit::v1::{
    AttestReviewRequest, ExportFormat, ExportQuarterlyReviewRequest,
    GenerateQuarterlyReviewRequest, GetQuarterlyReviewRequest, ReviewActionStatus, ReviewDecision,
};
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, notice, render};
use crate::AppState;
use crate::backends::AUDIT;
use crate::display;
use crate::error::PageError;

#[derive(Template)]
#[template(path = "reviews.html")]
struct ReviewsPage {
    chrome: Chrome,
    tenants: Vec<String>,
    year: i32,
    quarter: u32,
}

pub async fn start(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Html<String>, PageError> {
    signed.require(Role::Compliance, "The quarterly review")?;
    let today = chrono::Utc::now().date_naive();
    render(&ReviewsPage {
        chrome: signed.chrome("reviews"),
        tenants: state.tenants.clone(),
        year: today.year(),
        quarter: today.month0() / 3 + 1,
    })
}

#[derive(Deserialize)]
pub struct GenerateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant: String,
    year: u32,
    quarter: u32,
}

/// Generates the quarter's review (or finds the one already generated) and opens it.
pub async fn generate(
    State(state): State<AppState>,
    signed: Signed,
    Form(form): Form<GenerateForm>,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    signed.require(Role::Compliance, "Generating a quarterly review")?;
    let tenant = state.tenant(&form.tenant)?;
    let review = state
        .backends
        .compliance(&signed.0.person)
        .generate_quarterly_review(GenerateQuarterlyReviewRequest {
            tenant,
            year: form.year,
            quarter: form.quarter,
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?
        .into_inner();
    Ok(Redirect::to(&format!("/reviews/{}", review.review_id)))
}

pub struct ItemRow {
    pub connection_id: String,
    pub principal: String,
    pub app_id: String,
    pub tier: String,
    pub scopes: String,
    pub grant_age_days: u32,
    pub last_used_at: String,
    pub revoked: bool,
    pub decided: bool,
    pub decision: String,
    pub reviewer: String,
    pub note: String,
    pub action: String,
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    review_id: String,
    tenant: String,
    period: String,
    generated: String,
    unreviewed: u32,
    open_actions: u32,
    items: Vec<ItemRow>,
}

#[derive(Deserialize)]
pub struct ReviewQuery {
    done: Option<String>,
}

fn decision(value: i32) -> &'static str {
    match ReviewDecision::try_from(value) {
        Ok(ReviewDecision::Keep) => "keep",
        Ok(ReviewDecision::Revoke) => "revoke",
        _ => "",
    }
}

fn action(value: i32) -> &'static str {
    match ReviewActionStatus::try_from(value) {
        Ok(ReviewActionStatus::Open) => "revocation outstanding",
        Ok(ReviewActionStatus::Done) => "revoked",
        _ => "",
    }
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(review_id): Path<String>,
    Query(query): Query<ReviewQuery>,
) -> Result<Html<String>, PageError> {
    signed.require(Role::Compliance, "The quarterly review")?;
    let review = state
        .backends
        .compliance(&signed.0.person)
        .get_quarterly_review(GetQuarterlyReviewRequest {
            review_id,
            unreviewed_only: false,
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?
        .into_inner();
    let items = review
        .items
        .into_iter()
        .map(|item| {
            let c = item.connection.unwrap_or_default();
            ItemRow {
                tier: display::tier(c.risk_tier),
                scopes: display::scopes(&c.scopes),
                last_used_at: display::when(c.last_used_at.as_ref()),
                revoked: c.revoked,
                decided: item.decision != ReviewDecision::Unspecified as i32,
                decision: decision(item.decision).to_owned(),
                action: action(item.action).to_owned(),
                grant_age_days: item.grant_age_days,
                reviewer: item.reviewer,
                note: item.note,
                connection_id: c.connection_id,
                principal: c.principal,
                app_id: c.app_id,
            }
        })
        .collect();
    render(&ReviewPage {
        chrome: signed.chrome("reviews"),
        notice: notice(query.done.as_deref()),
        period: format!("{} Q{}", review.year, review.quarter),
        generated: format!(
            "{} by {}",
            display::when(review.generated_at.as_ref()),
            review.generated_by
        ),
        unreviewed: review.unreviewed,
        open_actions: review.open_actions,
        review_id: review.review_id,
        tenant: review.tenant,
        items,
    })
}

#[derive(Deserialize)]
pub struct AttestForm {
    #[serde(default)]
    csrf: String,
    /// "keep" or "revoke": the button pressed.
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: String,
}

pub async fn attest(
    State(state): State<AppState>,
    signed: Signed,
    Path((review_id, connection_id)): Path<(String, String)>,
    Form(form): Form<AttestForm>,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    signed.require(Role::Compliance, "Attesting a review")?;
    let decision = match form.decision.as_str() {
        "keep" => ReviewDecision::Keep,
        "revoke" => ReviewDecision::Revoke,
        _ => return Err(PageError::bad_request("decision: must be keep or revoke")),
    };
    state
        .backends
        .compliance(&signed.0.person)
        .attest_review(AttestReviewRequest {
            review_id: review_id.clone(),
            connection_id,
            decision: decision as i32,
            note: form.note.trim().to_owned(),
            ..AttestReviewRequest::default()
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?;
    Ok(Redirect::to(&format!("/reviews/{review_id}?done=attested")))
}

/// The review as CSV, streamed from audit-svc as it exports it.
pub async fn export_csv(
    State(state): State<AppState>,
    signed: Signed,
    Path(review_id): Path<String>,
) -> Result<Response, PageError> {
    signed.require(Role::Compliance, "Exporting a review")?;
    let stream = state
        .backends
        .compliance(&signed.0.person)
        .export_quarterly_review(ExportQuarterlyReviewRequest {
            review_id: review_id.clone(),
            format: ExportFormat::Csv as i32,
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?
        .into_inner();
    // The id is audit-svc's (a UUID it found); only those characters go into the header.
    let file: String = review_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let body = Body::from_stream(futures_util::StreamExt::map(stream, |chunk| {
        chunk.map(|c| c.data).map_err(|status| {
            tracing::warn!(error = %status, "review export broke off");
            std::io::Error::other(status.message().to_owned())
        })
    }));
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"review-{file}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}
