//! `/api/v4/webhooks`: listing, showing, creating, updating and deleting an app's webhook
//! subscriptions in the token's account, and `PUT /webhooks/{id}/activate` to confirm a
//! handshake later. Reading needs `webhooks:read`, changing `webhooks:write`; creating or
//! re-pointing one at a model also needs read access to that model's family.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::fields::Fields;
use super::list::{Origin, decode_page_token, encode_page_token};
use super::params::Params;
use super::require_family;
use super::route::ApiRoute;
use crate::apps::Access;
use crate::oauth::store::Bearer;
use crate::region::RegionState;
use crate::webhooks::{Draft, Owner, WEBHOOK_SCHEMA, WebhookStatus};

/// The parts of a webhook request the handlers read.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    pub(crate) params: &'a Params,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a Bytes,
    pub(crate) origin: &'a Origin<'a>,
}

/// Webhooks listed per page at most (Clio: 200, like other listings).
const MAX_LIMIT: usize = 200;

fn owner_of(bearer: &Bearer) -> Owner {
    Owner {
        client_id: bearer.client_id.clone(),
        account: bearer.account,
        user_key: bearer.user_key,
    }
}

/// A path id; anything but a number names no webhook.
fn id_of(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found())
}

fn data(status: StatusCode, fields: &Fields, record: &Value) -> Response {
    (status, axum::Json(json!({"data": fields.project(record)}))).into_response()
}

pub(crate) fn handle(
    state: &RegionState,
    bearer: &Bearer,
    route: ApiRoute,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    let fields = Fields::parse_in(WEBHOOK_SCHEMA, request.params.get("fields"))?;
    let owner = owner_of(bearer);
    let webhooks = &state.webhooks;
    match (request.method.clone(), route) {
        (Method::GET, ApiRoute::Webhooks) => {
            require_family(state, bearer, "webhooks", Access::Read)?;
            list(state, &owner, &fields, request)
        }
        (Method::POST, ApiRoute::Webhooks) => {
            require_family(state, bearer, "webhooks", Access::Write)?;
            let draft = draft(state, request)?;
            if let Some(model) = draft.model {
                require_family(state, bearer, model.family(), Access::Read)?;
            }
            let record = webhooks.create(draft, owner)?;
            Ok(data(StatusCode::CREATED, &fields, &record))
        }
        (Method::GET, ApiRoute::Webhook(id)) => {
            require_family(state, bearer, "webhooks", Access::Read)?;
            let record = webhooks
                .with_visible(&owner, id_of(&id)?, |subscription, _| subscription.record())
                .ok_or_else(ApiError::not_found)?;
            Ok(data(StatusCode::OK, &fields, &record))
        }
        (Method::PATCH, ApiRoute::Webhook(id)) => {
            require_family(state, bearer, "webhooks", Access::Write)?;
            let id = id_of(&id)?;
            let draft = draft(state, request)?;
            if let Some(model) = draft.model {
                require_family(state, bearer, model.family(), Access::Read)?;
            }
            let if_match = request
                .headers
                .get(header::IF_MATCH)
                .and_then(|value| value.to_str().ok());
            let record = webhooks
                .update(&owner, id, if_match, draft)?
                .ok_or_else(ApiError::not_found)?;
            Ok(data(StatusCode::OK, &fields, &record))
        }
        (Method::DELETE, ApiRoute::Webhook(id)) => {
            require_family(state, bearer, "webhooks", Access::Write)?;
            if webhooks.delete(&owner, id_of(&id)?) {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(ApiError::not_found())
            }
        }
        (Method::PUT, ApiRoute::ActivateWebhook(id)) => {
            require_family(state, bearer, "webhooks", Access::Write)?;
            let presented = request
                .headers
                .get("x-hook-secret")
                .map(|value| value.as_bytes().to_vec())
                .unwrap_or_default();
            let record = webhooks
                .with_visible(&owner, id_of(&id)?, |subscription, now| {
                    if !subscription.secret.matches(&presented) {
                        return Err(ApiError::typed(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "ValidationError",
                            "X-Hook-Secret does not match the webhook's shared secret",
                        ));
                    }
                    if subscription.status != WebhookStatus::Enabled {
                        subscription.status = WebhookStatus::Enabled;
                        subscription.consecutive_failures = 0;
                        subscription.version += 1;
                        subscription.updated_at = now;
                    }
                    Ok(subscription.record())
                })
                .ok_or_else(ApiError::not_found)??;
            Ok(data(StatusCode::OK, &fields, &record))
        }
        (method, _) => Err(ApiError::typed(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", request.origin.path),
        )),
    }
}

fn draft(state: &RegionState, request: &Request<'_>) -> Result<Draft, ApiError> {
    let now = state.shared.clock.now();
    Draft::parse(request.body, &state.shared.config.webhooks, now)
}

/// One page of the app's webhooks in the account, in id order, cursor-paged.
fn list(
    state: &RegionState,
    owner: &Owner,
    fields: &Fields,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    let params = request.params;
    let limit = match params.get("limit") {
        None => MAX_LIMIT,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_parameter(format!("limit must be between 1 and {MAX_LIMIT}: {text}"))
            })?,
    };
    let after = params
        .get("page_token")
        .map(|token| {
            decode_page_token(token).ok_or_else(|| ApiError::bad_parameter("page_token is invalid"))
        })
        .transpose()?;
    let mut records = state.webhooks.list(owner, after, limit);
    let mut paging = serde_json::Map::new();
    if records.len() > limit {
        records.truncate(limit);
        if let Some(last) = records.last().and_then(|record| record["id"].as_i64()) {
            let next = request
                .origin
                .url(params, &[("page_token", encode_page_token(last))]);
            paging.insert("next".to_owned(), Value::String(next));
        }
    }
    let page: Vec<Value> = records
        .iter()
        .map(|record| fields.project(record))
        .collect();
    Ok(axum::Json(json!({"data": page, "meta": {"paging": paging}})).into_response())
}
