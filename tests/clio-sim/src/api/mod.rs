//! Clio API v4: version check, bearer authentication, the per-token and per-app rate
//! limits and permissions, in that order, then the endpoint.

mod activity;
mod error;
mod fields;
mod filter;
pub(crate) mod list;
pub(crate) mod params;
mod record;
pub(crate) mod route;
mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

pub(crate) use self::error::ApiError;
pub(crate) use self::fields::Fields;
use self::params::Params;
pub(crate) use self::record::names_etag;
use self::route::ApiRoute;
use crate::apps::Access;
use crate::calls::token_id;
use crate::oauth::store::Bearer;
use crate::ratelimit::Verdict;
use crate::region::RegionState;
use crate::resource::Resource;

/// The version answered when a request names none.
pub const DEFAULT_API_VERSION: &str = "4.0.13";
/// Minor versions 4.0.0 to 4.0.13 exist; anything else is gone (410).
const NEWEST_PATCH: u32 = 13;

/// The bearer token of a request, if any.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// An `X-API-VERSION` Clio does not serve (any but 4.0.0 to 4.0.13).
struct UnknownVersion(HeaderValue);

impl IntoResponse for UnknownVersion {
    fn into_response(self) -> Response {
        let text = self.0.to_str().unwrap_or_default().trim().to_owned();
        let message = format!("API version {text} is not supported");
        let mut response = ApiError::typed(StatusCode::GONE, "Gone", message).into_response();
        response.headers_mut().insert("x-api-version", self.0);
        response
    }
}

/// The `X-API-VERSION` to echo.
fn api_version(headers: &HeaderMap) -> Result<HeaderValue, UnknownVersion> {
    let Some(requested) = headers.get("x-api-version") else {
        return Ok(HeaderValue::from_static(DEFAULT_API_VERSION));
    };
    let known = requested
        .to_str()
        .unwrap_or_default()
        .trim()
        .strip_prefix("4.0.")
        .and_then(|patch| patch.parse::<u32>().ok())
        .is_some_and(|patch| patch <= NEWEST_PATCH);
    if known {
        Ok(requested.clone())
    } else {
        Err(UnknownVersion(requested.clone()))
    }
}

/// Every `/api/v4/...` request.
pub(crate) async fn dispatch(
    State(state): State<Arc<RegionState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Clio's clock when the request arrived (before any page delay): a client may take it
    // as the moment its listing began.
    let date = http_date(state.shared.clock.now());
    let version = match api_version(&headers) {
        Ok(version) => version,
        Err(gone) => return gone.into_response(),
    };
    let mut response = authenticated(&state, &method, &uri, &headers, &body).await;
    response.headers_mut().insert("x-api-version", version);
    if let Ok(date) = HeaderValue::from_str(&date) {
        // Set here, hyper leaves it alone (it would stamp the real time otherwise).
        response.headers_mut().insert(header::DATE, date);
    }
    response
}

/// An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`) of the simulated clock.
fn http_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

async fn authenticated(
    state: &RegionState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some(token) = bearer_token(headers) else {
        return ApiError::InvalidToken("a bearer token is required").into_response();
    };
    let bearer = match state.authenticate(token) {
        Ok(bearer) => bearer,
        Err(description) => return ApiError::InvalidToken(description).into_response(),
    };
    // Both windows count every request, refused or not, as the token window always has.
    let verdict = state.limiter.check(&token_id(token));
    let app_verdict = state.app_limiter.check(&bearer.client_id);
    let token_over = verdict.and_then(|verdict| verdict.retry_after);
    let app_over = app_verdict.and_then(|verdict| verdict.retry_after);
    let mut response = match (token_over, app_over) {
        (Some(retry_after), _) => too_many_requests(retry_after, "Rate limit exceeded"),
        (None, Some(retry_after)) => {
            state
                .shared
                .calls
                .app_limited(state.region, &bearer.client_id);
            too_many_requests(retry_after, "Rate limit exceeded for this application")
        }
        (None, None) => endpoint(state, &bearer, method, uri, headers, body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    };
    if let Some(verdict) = verdict {
        add_rate_headers(response.headers_mut(), verdict);
    }
    response
}

/// A 429 with `Retry-After`; the `X-RateLimit-*` headers (added by the caller) keep
/// describing the token's own window, as Clio documents them per token.
fn too_many_requests(retry_after: u64, what: &str) -> Response {
    let message = format!("{what}. Retry in {retry_after} seconds");
    let mut response =
        ApiError::typed(StatusCode::TOO_MANY_REQUESTS, "RateLimited", message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn add_rate_headers(headers: &mut HeaderMap, verdict: Verdict) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(verdict.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(verdict.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(verdict.reset));
}

/// 403 unless the token's app declared the permission.
fn require(
    state: &RegionState,
    bearer: &Bearer,
    resource: Resource,
    access: Access,
) -> Result<(), ApiError> {
    require_family(state, bearer, resource.family(), access)
}

/// 403 unless the token's app declared `family:access` (or write, for read).
fn require_family(
    state: &RegionState,
    bearer: &Bearer,
    family: &str,
    access: Access,
) -> Result<(), ApiError> {
    if state
        .app(&bearer.client_id)
        .is_some_and(|app| app.allows_family(family, access))
    {
        return Ok(());
    }
    let access = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    Err(ApiError::typed(
        StatusCode::FORBIDDEN,
        "ForbiddenError",
        format!("the application lacks the {family}:{access} permission"),
    ))
}

async fn endpoint(
    state: &RegionState,
    bearer: &Bearer,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let route = route::parse(uri.path()).ok_or_else(|| {
        ApiError::typed(
            StatusCode::NOT_FOUND,
            "RouteNotFound",
            format!("no route for {}", uri.path()),
        )
    })?;
    let params = Params::parse(uri.query());
    // The grant's account: validated when the user approved, so always there.
    let data = state
        .account(bearer.account)
        .ok_or(ApiError::InvalidToken("the access token is invalid"))?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let origin = list::Origin {
        host,
        path: uri.path(),
    };
    match (method.clone(), route) {
        (
            method,
            route @ (ApiRoute::Webhooks | ApiRoute::Webhook(_) | ApiRoute::ActivateWebhook(_)),
        ) => {
            let request = webhooks::Request {
                method: &method,
                params: &params,
                headers,
                body,
                origin: &origin,
            };
            webhooks::handle(state, bearer, route, &request)
        }
        (Method::GET, ApiRoute::WhoAmI) => record::who_am_i(data, bearer.user_key, &params),
        (Method::GET, ApiRoute::Collection(resource)) => {
            require(state, bearer, resource, Access::Read)?;
            if let Some(delay) = state.shared.config.page_delay {
                tokio::time::sleep(delay).await;
            }
            list::list(state, data, resource, &params, &origin, bearer)
        }
        (Method::GET, ApiRoute::Record(resource, id)) => {
            require(state, bearer, resource, Access::Read)?;
            record::show(data, resource, &id, &params, headers)
        }
        (Method::PATCH, ApiRoute::Record(resource, id)) => {
            require(state, bearer, resource, Access::Write)?;
            record::update(state, data, resource, &id, &params, headers, body)
        }
        (Method::POST, ApiRoute::Collection(Resource::Activities)) => {
            require(state, bearer, Resource::Activities, Access::Write)?;
            activity::create(state, data, &params, body)
        }
        (method, _) => Err(ApiError::typed(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", uri.path()),
        )),
    }
}
