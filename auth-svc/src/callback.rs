//! The web flow's HTTP pages: the start link (`GET /connect/start?state=...`, see
//! [`crate::browser_binding`]) and the callback `GET /oauth/callback?code=...&state=...` (or
//! `?error=access_denied&state=...` when the person declined). Served without a service
//! credential: the single-use state is what authorizes the request, and it carries the
//! principal and app, so nothing in the query is trusted beyond the code. Only web-mode
//! states complete here; an out-of-band state is bound to the caller that started it and
//! completes only through CompleteAuthorization.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use secrecy::SecretString;
use serde::Deserialize;

use crate::browser_binding;
use crate::connect::{self, Answer, Completer};
use crate::context::Context;
use crate::error::AuthError;

pub const CALLBACK_PATH: &str = "/oauth/callback";

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub fn router(ctx: Context) -> axum::Router {
    axum::Router::new()
        .route(CALLBACK_PATH, get(callback))
        .route(browser_binding::START_PATH, get(browser_binding::start))
        .with_state(ctx)
}

#[tracing::instrument(skip_all)]
async fn callback(
    State(ctx): State<Context>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(state) = query.state.filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Connection failed",
            "The link is missing its state.",
        );
    };
    let answer = match (query.error, query.code) {
        (Some(error), _) => Answer::Denied(error),
        (None, Some(code)) if !code.is_empty() => Answer::Code(SecretString::from(code)),
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Connection failed",
                "The link carries neither a code nor an error.",
            );
        }
    };
    let denied = matches!(answer, Answer::Denied(_));
    let cookie = browser_binding::presented(&headers, &state);
    match connect::complete(&ctx, &state, Completer::Browser(cookie.as_deref()), answer).await {
        Ok(connection) => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "Clio account {} is connected for {}. You can close this window.",
                connection.clio_account_name, connection.principal
            ),
        ),
        Err(AuthError::FailedPrecondition(_)) if denied => page(
            StatusCode::OK,
            "Access denied",
            "You declined access at Clio. No connection was made.",
        ),
        Err(error) => {
            let status = match error.code() {
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                tonic::Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            // into_status logs server-side failures and keeps their detail out of the page.
            let message = error.into_status().message().to_owned();
            page(status, "Connection failed", &message)
        }
    }
}

pub(crate) fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape(message),
        title = escape(title)
    );
    (status, [("cache-control", "no-store")], Html(body)).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
