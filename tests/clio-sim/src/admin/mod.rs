//! The simulator's own admin API under `/__sim/` (see the README): registering apps,
//! consenting without a browser, call counts, revoking grants, faults, the clock,
//! record edits and webhook inspection. It acts on the region whose listener it is
//! called on, except the clock and the call counters, which are global.
//!
//! Record edits here are changes like any other: they fire the webhooks of account 1.

mod client;
mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

pub use client::AdminClient;

use crate::apps::AppSpec;
use crate::faults::Fault;
use crate::oauth::authorize::{Decision, decide};
use crate::region::RegionState;
use crate::resource::{RecordId, Resource};
use crate::webhooks::{Change, record_changed};

type Shared = State<Arc<RegionState>>;

pub(crate) fn routes() -> Router<Arc<RegionState>> {
    Router::new()
        .route("/apps", post(register_app))
        .route("/consent", post(consent))
        .route("/calls", get(calls).delete(reset_calls))
        .route("/grants/revoke", post(revoke))
        .route("/faults", post(inject).delete(clear_faults))
        .route("/clock/advance", post(advance_clock))
        .route("/rate-limits/reset", post(reset_rate_limits))
        .route("/records/{resource}", post(create_record))
        .route("/records/{resource}/count", get(count))
        .route("/visibility", post(hide_records))
        .route("/activities/created", get(created_activities))
        .route(
            "/records/{resource}/{id}",
            get(read_record).patch(update_record).delete(delete_record),
        )
        .route("/records/{resource}/{id}/raw", put(set_raw_record))
        .merge(webhooks::routes())
        // Tests store multi-megabyte records (hostile data); axum's default is 2 MB.
        .layer(DefaultBodyLimit::max(64 << 20))
}

fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    AdminError(status, message.into()).into_response()
}

/// A refused admin request: status and message.
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

async fn register_app(State(state): Shared, Json(app): Json<AppSpec>) -> StatusCode {
    state.register_app(app);
    StatusCode::CREATED
}

/// Account 1: the region's usual firm, where users are unless a request says otherwise.
fn first_account() -> u32 {
    1
}

#[derive(Deserialize)]
struct ConsentRequest {
    authorize_url: String,
    /// The account (1-based) the user belongs to.
    #[serde(default = "first_account")]
    account: u32,
    user_id: i64,
    decision: Decision,
}

async fn consent(State(state): Shared, Json(request): Json<ConsentRequest>) -> Response {
    let Ok(url) = Url::parse(&request.authorize_url) else {
        return admin_error(StatusCode::BAD_REQUEST, "authorize_url is not a URL");
    };
    let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let outcome = decide(
        &state,
        &params,
        request.account,
        request.user_id,
        request.decision,
    );
    Json(outcome).into_response()
}

async fn calls(State(state): Shared) -> Response {
    Json(state.shared.call_counts()).into_response()
}

async fn reset_calls(State(state): Shared) -> StatusCode {
    state.shared.reset_calls();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RevokeRequest {
    client_id: Option<String>,
    #[serde(default = "first_account")]
    account: u32,
    user_id: Option<i64>,
    access_token: Option<String>,
}

async fn revoke(State(state): Shared, Json(request): Json<RevokeRequest>) -> Response {
    let revoked = match request {
        RevokeRequest {
            access_token: Some(token),
            ..
        } => state.oauth.revoke_by_access_token(&token),
        RevokeRequest {
            client_id: Some(client_id),
            account,
            user_id: Some(user_id),
            ..
        } => {
            let user_key = state.resolve_user(account, user_id).unwrap_or(user_id);
            state.oauth.revoke_grants_of(&client_id, account, user_key)
        }
        _ => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "give access_token, or client_id and user_id",
            );
        }
    };
    Json(json!({"revoked": revoked})).into_response()
}

async fn inject(State(state): Shared, Json(fault): Json<Fault>) -> StatusCode {
    state.faults.add(fault);
    StatusCode::CREATED
}

async fn clear_faults(State(state): Shared) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_clock(State(state): Shared, Json(advance): Json<Advance>) -> Response {
    let now = state
        .shared
        .clock
        .advance(std::time::Duration::from_secs(advance.seconds));
    Json(json!({"now": now.to_rfc3339()})).into_response()
}

async fn reset_rate_limits(State(state): Shared) -> StatusCode {
    state.limiter.reset_windows();
    state.app_limiter.reset_windows();
    StatusCode::NO_CONTENT
}

fn resource_of(name: &str) -> Result<Resource, AdminError> {
    name.parse()
        .map_err(|_| AdminError(StatusCode::NOT_FOUND, format!("unknown resource {name}")))
}

fn key_of(id: &str) -> Result<i64, AdminError> {
    RecordId::from(id)
        .key()
        .ok_or_else(|| AdminError(StatusCode::BAD_REQUEST, format!("{id} is not a record id")))
}

async fn create_record(
    State(state): Shared,
    Path(resource): Path<String>,
    Json(record): Json<Value>,
) -> Response {
    let resource = match resource_of(&resource) {
        Ok(resource) => resource,
        Err(error) => return error.into_response(),
    };
    // An upsert naming an existing record updates it.
    let before = record
        .get("id")
        .filter(|id| !id.is_null())
        .and_then(|id| RecordId::from(id).key())
        .and_then(|key| state.data.get(resource, key));
    match state
        .data
        .upsert(resource, record, state.shared.clock.now())
    {
        Ok(created) => {
            if let Some(key) = created.get("id").and_then(|id| RecordId::from(id).key()) {
                announce(&state, resource, key, before.as_ref(), Some(&created));
            }
            let id = created.get("id").cloned().unwrap_or(Value::Null);
            (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
        }
        Err(error) => admin_error(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn count(State(state): Shared, Path(resource): Path<String>) -> Response {
    match resource_of(&resource) {
        Ok(resource) => Json(json!({"count": state.data.count(resource)})).into_response(),
        Err(error) => error.into_response(),
    }
}

fn record_target(resource: &str, id: &str) -> Result<(Resource, i64), AdminError> {
    Ok((resource_of(resource)?, key_of(id)?))
}

async fn read_record(
    State(state): Shared,
    Path((resource, id)): Path<(String, String)>,
) -> Response {
    match record_target(&resource, &id) {
        Ok((resource, key)) => match state.data.get(resource, key) {
            Some(record) => Json(json!({"data": record})).into_response(),
            None => admin_error(StatusCode::NOT_FOUND, format!("no {resource} {id}")),
        },
        Err(error) => error.into_response(),
    }
}

async fn update_record(
    State(state): Shared,
    Path((resource, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> Response {
    let (resource, key) = match record_target(&resource, &id) {
        Ok(target) => target,
        Err(error) => return error.into_response(),
    };
    let Value::Object(patch) = patch else {
        return admin_error(StatusCode::BAD_REQUEST, "the change must be a JSON object");
    };
    let before = state.data.get(resource, key);
    match state
        .data
        .update(resource, key, &patch, state.shared.clock.now())
    {
        Some(record) => {
            announce(&state, resource, key, before.as_ref(), Some(&record));
            Json(json!({"data": record})).into_response()
        }
        None => admin_error(StatusCode::NOT_FOUND, format!("no {resource} {id}")),
    }
}

#[derive(Deserialize)]
struct AccountQuery {
    #[serde(default = "first_account")]
    account: u32,
}

/// The activities created through `POST /api/v4/activities` in one account (default 1),
/// oldest first, as stored now: `{"count": n, "data": [record, ...]}`.
async fn created_activities(State(state): Shared, Query(query): Query<AccountQuery>) -> Response {
    let Some(data) = state.account(query.account) else {
        return admin_error(
            StatusCode::NOT_FOUND,
            format!("no account {}", query.account),
        );
    };
    let created = data.created_through_api();
    Json(json!({"count": created.len(), "data": created})).into_response()
}

#[derive(Deserialize)]
struct HideRequest {
    user_id: i64,
    resource: String,
    hidden_ids: Vec<Value>,
}

/// Hides records from one user's listings (replacing what was hidden from them before).
async fn hide_records(State(state): Shared, Json(request): Json<HideRequest>) -> Response {
    let resource = match resource_of(&request.resource) {
        Ok(resource) => resource,
        Err(error) => return error.into_response(),
    };
    // Visibility is a matter of account 1, the firm the admin API edits.
    let Some(user_key) = state.resolve_user(1, request.user_id) else {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!("no user {}", request.user_id),
        );
    };
    let mut keys = std::collections::BTreeSet::new();
    for id in &request.hidden_ids {
        match RecordId::from(id).key() {
            Some(key) => keys.insert(key),
            None => {
                return admin_error(StatusCode::BAD_REQUEST, format!("{id} is not a record id"));
            }
        };
    }
    state.hide(user_key, resource, keys);
    StatusCode::NO_CONTENT.into_response()
}

/// Tells account 1's webhooks about an admin edit.
fn announce(
    state: &RegionState,
    resource: Resource,
    key: i64,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    let change = Change {
        account: state.data.account(),
        resource,
        key,
        before,
        after,
    };
    record_changed(state, change);
}

/// Serves `text` verbatim in list pages in place of the record: hostile JSON (a lone
/// surrogate, nesting deeper than a parser allows) that no `Value` can hold. The stored
/// record does not change, so no webhook fires.
async fn set_raw_record(
    State(state): Shared,
    Path((resource, id)): Path<(String, String)>,
    text: String,
) -> Response {
    match record_target(&resource, &id) {
        Ok((resource, key)) if state.data.set_raw(resource, key, &text) => {
            StatusCode::NO_CONTENT.into_response()
        }
        Ok((resource, _)) => admin_error(StatusCode::NOT_FOUND, format!("no {resource} {id}")),
        Err(error) => error.into_response(),
    }
}

async fn delete_record(
    State(state): Shared,
    Path((resource, id)): Path<(String, String)>,
) -> Response {
    let target = record_target(&resource, &id);
    let before = target
        .as_ref()
        .ok()
        .and_then(|(resource, key)| state.data.get(*resource, *key));
    match target {
        Ok((resource, key)) if state.data.delete(resource, key) => {
            announce(&state, resource, key, before.as_ref(), None);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok((resource, _)) => admin_error(StatusCode::NOT_FOUND, format!("no {resource} {id}")),
        Err(error) => error.into_response(),
    }
}
