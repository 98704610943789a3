//! Admin endpoints for webhooks: what is subscribed, what was delivered (with every
//! attempt and the receiver's answers), and hostile deliveries on demand (replaying an
//! earlier delivery, or sending a body of the test's choosing). The `webhook_*` faults
//! go through `POST /__sim/faults` like every other fault.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::admin_error;
use crate::region::RegionState;

type Shared = State<Arc<RegionState>>;

pub(super) fn routes() -> Router<Arc<RegionState>> {
    Router::new()
        .route("/webhooks", get(subscriptions))
        .route("/webhooks/deliveries", get(deliveries))
        .route("/webhooks/deliveries/{id}/replay", post(replay))
        .route("/webhooks/{id}/raw", post(deliver_raw))
}

#[derive(Deserialize)]
struct AccountFilter {
    account: Option<u32>,
}

/// `{"data": [WebhookInfo, ...]}`: every app's subscriptions in the account (all
/// accounts without `?account=`), expired and suspended ones included.
async fn subscriptions(State(state): Shared, Query(filter): Query<AccountFilter>) -> Response {
    Json(json!({"data": state.webhooks.infos(filter.account)})).into_response()
}

#[derive(Deserialize)]
struct DeliveryFilter {
    webhook_id: Option<i64>,
}

/// `{"settled": bool, "data": [WebhookDelivery, ...]}`, oldest first. `settled`: no
/// handshake is being sent and no delivery waits to be sent or retried (held ones aside).
async fn deliveries(State(state): Shared, Query(filter): Query<DeliveryFilter>) -> Response {
    let (settled, deliveries) = state.webhooks.deliveries(filter.webhook_id);
    Json(json!({"settled": settled, "data": deliveries})).into_response()
}

/// Sends an earlier delivery's bytes and signature again: `{"id"}` of the replay.
async fn replay(State(state): Shared, Path(id): Path<u64>) -> Response {
    match state.webhooks.replay(id) {
        Some(replay) => (StatusCode::CREATED, Json(json!({"id": replay}))).into_response(),
        None => admin_error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
    }
}

/// Sends the request body as it is to the webhook's URL, signed with its secret, once:
/// `{"id"}` of the delivery. For receivers facing hostile bodies.
async fn deliver_raw(State(state): Shared, Path(id): Path<i64>, body: String) -> Response {
    match state.webhooks.deliver_raw(id, body) {
        Some(delivery) => (StatusCode::CREATED, Json(json!({"id": delivery}))).into_response(),
        None => admin_error(StatusCode::NOT_FOUND, format!("no webhook {id}")),
    }
}
