//! `POST /oauth/token` (code exchange and refresh) and `POST /oauth/deauthorize`.
//!
//! OAuth-layer errors are flat `{"error", "error_description"}` bodies: `400` for request
//! and grant problems, `401 invalid_client` for bad client credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use url::form_urlencoded;

use super::store::Issued;
use crate::api::bearer_token;
use crate::calls::TokenOutcome;
use crate::region::RegionState;

/// A flat OAuth error answer.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Client credentials from the form body, or from HTTP Basic (tolerated, as most OAuth
/// servers do).
fn client_credentials(
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<(String, String)> {
    if let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) {
        return Some((id.clone(), secret.clone()));
    }
    let basic = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn token_response(state: &RegionState, issued: Issued) -> Response {
    let mut body = json!({
        "token_type": "bearer",
        "access_token": issued.access_token,
        "expires_in": state.shared.config.access_token_ttl.as_secs(),
    });
    if let (Some(refresh), Value::Object(fields)) = (issued.refresh_token, &mut body) {
        fields.insert("refresh_token".to_owned(), Value::String(refresh));
    }
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    (StatusCode::OK, no_store, Json(body)).into_response()
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(state): State<Arc<RegionState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (response, outcome) = exchange(&state, &headers, &body);
    state.shared.calls.token(outcome);
    response
}

fn exchange(state: &RegionState, headers: &HeaderMap, body: &[u8]) -> (Response, TokenOutcome) {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let fail = |response| (response, TokenOutcome::Error);
    let Some(grant_type) = form.get("grant_type") else {
        return fail(invalid_request("grant_type is missing"));
    };
    let Some((client_id, secret)) = client_credentials(&form, headers) else {
        return fail(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id and client_secret are required",
        ));
    };
    if state
        .app(&client_id)
        .is_none_or(|app| app.client_secret != secret)
    {
        return fail(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ));
    }
    let config = &state.shared.config;
    let now = state.shared.clock.now();
    let invalid_grant =
        |description| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    match grant_type.as_str() {
        "authorization_code" => {
            let (Some(code), Some(redirect_uri)) = (form.get("code"), form.get("redirect_uri"))
            else {
                return fail(invalid_request("code and redirect_uri are required"));
            };
            match state.oauth.exchange_code(
                &client_id,
                code,
                redirect_uri,
                now,
                config.access_token_ttl,
            ) {
                Ok(issued) => (token_response(state, issued), TokenOutcome::Code),
                Err(description) => fail(invalid_grant(description)),
            }
        }
        "refresh_token" => {
            let Some(refresh_token) = form.get("refresh_token") else {
                return fail(invalid_request("refresh_token is required"));
            };
            let rotate = config.rotate_refresh_tokens;
            match state.oauth.refresh(
                &client_id,
                refresh_token,
                now,
                config.access_token_ttl,
                rotate,
            ) {
                Ok(issued) => {
                    let grant = format!("{}/{}", state.region, issued.grant);
                    (
                        token_response(state, issued),
                        TokenOutcome::Refresh { grant },
                    )
                }
                Err(description) => fail(invalid_grant(description)),
            }
        }
        other => fail(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other} is not supported"),
        )),
    }
}

/// `POST /oauth/deauthorize`: revokes the grant of the `token` in the body (or of the
/// bearer token); every token of that grant is rejected afterwards.
pub(crate) async fn deauthorize(
    State(state): State<Arc<RegionState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.shared.calls.deauthorize();
    let now = state.shared.clock.now();
    let bearer = match bearer_token(&headers).map(|token| state.oauth.authenticate(token, now)) {
        Some(Ok(bearer)) => bearer,
        Some(Err(description)) => {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
        }
        None => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "a bearer token is required",
            );
        }
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let revoked = form
        .get("token")
        .map_or(0, |token| state.oauth.revoke_by_access_token(token));
    if revoked == 0 {
        state.oauth.revoke_grant(bearer.grant);
    }
    StatusCode::OK.into_response()
}
