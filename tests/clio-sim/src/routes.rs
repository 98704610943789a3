//! The HTTP surface of one region: Clio's `/oauth` and `/api/v4`, wrapped in fault
//! injection and call counting, plus the simulator's own `/__sim` admin API (which faults
//! never touch).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use crate::calls::token_id;
use crate::faults::Outcome;
use crate::region::RegionState;
use crate::server::DropConnection;
use crate::{admin, api, oauth};

pub(crate) fn router(state: Arc<RegionState>) -> Router {
    let clio = Router::new()
        .route(
            "/oauth/authorize",
            get(oauth::authorize::consent_page).post(oauth::authorize::decide_in_browser),
        )
        .route("/oauth/approval", get(oauth::authorize::approval_page))
        .route("/oauth/token", post(oauth::token::token))
        .route("/oauth/deauthorize", post(oauth::token::deauthorize))
        .route("/api/v4/{*rest}", any(api::dispatch))
        .layer(from_fn_with_state(state.clone(), apply_faults))
        .layer(from_fn_with_state(state.clone(), record_api_calls));
    clio.nest("/__sim", admin::routes()).with_state(state)
}

/// Counts every API call under its token hash and endpoint template, whatever the answer.
async fn record_api_calls(
    State(state): State<Arc<RegionState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/api/v4") {
        return next.run(request).await;
    }
    let endpoint = api::route::endpoint_template(path);
    let method = request.method().as_str().to_owned();
    let token = api::bearer_token(request.headers()).map_or_else(|| "none".to_owned(), token_id);
    let response = next.run(request).await;
    state.shared.calls.api(
        state.region,
        token,
        &method,
        endpoint,
        response.status().as_u16(),
    );
    response
}

async fn apply_faults(
    State(state): State<Arc<RegionState>>,
    request: Request,
    next: Next,
) -> Response {
    let token = api::bearer_token(request.headers()).map_or_else(|| "none".to_owned(), token_id);
    let plan = state
        .faults
        .plan(request.method().as_str(), request.uri().path(), &token);
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    match plan.outcome {
        None => next.run(request).await,
        Some(Outcome::Drop) => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            response
        }
        Some(Outcome::DropAfterHandling(delay)) => {
            // The write happens; only its answer is lost.
            let mut response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response.extensions_mut().insert(DropConnection);
            response
        }
        Some(Outcome::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body =
                json!({"error": {"type": "ServerError", "message": format!("simulated {status}")}});
            (status, axum::Json(body)).into_response()
        }
        Some(Outcome::Storm { retry_after_secs }) => rate_limit_storm(&state, retry_after_secs),
        Some(Outcome::Redirect(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
            let location = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let mut response = status.into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
    }
}

/// A 429 as a busy Clio sends it: `Retry-After` and an exhausted window that resets then.
fn rate_limit_storm(state: &RegionState, retry_after_secs: u64) -> Response {
    let limit = state
        .shared
        .config
        .rate_limit
        .map_or(50, |limit| limit.limit);
    let reset = chrono::Utc::now()
        .timestamp()
        .saturating_add_unsigned(retry_after_secs);
    let body = json!({"error": {"type": "RateLimited", "message": format!("Rate limit exceeded. Retry in {retry_after_secs} seconds")}});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("retry-after", HeaderValue::from(retry_after_secs));
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    response
}
