//! Single records: `GET` (with `ETag`/`Last-Modified` and `If-None-Match` → 304),
//! `PATCH` (with `If-Match` → 412 when stale) and `users/who_am_i`.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::fields::Fields;
use super::params::Params;
use crate::dataset::{Dataset, schema};
use crate::region::RegionState;
use crate::resource::{RecordId, Resource};
use crate::webhooks::{self, Change};

/// Fields the simulator maintains itself; writes to them are dropped.
const MAINTAINED: &[&str] = &["id", "etag", "created_at", "updated_at"];

/// The live record a path id names.
fn find(data: &Dataset, resource: Resource, id: &str) -> Result<(i64, Value), ApiError> {
    let id = if resource.has_string_ids() {
        RecordId::from(id)
    } else {
        RecordId::Int(id.parse().map_err(|_| ApiError::not_found())?)
    };
    let key = id.key().ok_or_else(ApiError::not_found)?;
    let record = data.find(resource, &id).ok_or_else(ApiError::not_found)?;
    Ok((key, record))
}

fn etag_of(record: &Value) -> &str {
    record
        .get("etag")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether an `If-None-Match`/`If-Match` list names `etag` (or is `*`).
pub(crate) fn names_etag(header_value: &str, etag: &str) -> bool {
    header_value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `{"data": ...}` with the record's `ETag` and `Last-Modified`.
fn record_response(status: StatusCode, record: &Value, data: Value) -> Response {
    let mut response = (status, Json(json!({"data": data}))).into_response();
    add_validators(response.headers_mut(), record);
    response
}

fn add_validators(headers: &mut HeaderMap, record: &Value) {
    if let Ok(etag) = HeaderValue::from_str(etag_of(record)) {
        headers.insert(header::ETAG, etag);
    }
    let modified = record
        .get("updated_at")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| {
            time.to_utc()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string()
        });
    if let Some(value) = modified.and_then(|m| HeaderValue::from_str(&m).ok()) {
        headers.insert(header::LAST_MODIFIED, value);
    }
}

pub(crate) fn show(
    data: &Dataset,
    resource: Resource,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let fields = Fields::parse(resource, params.get("fields"))?;
    let (_, record) = find(data, resource, id)?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|value| names_etag(value, etag_of(&record))) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        add_validators(response.headers_mut(), &record);
        return Ok(response);
    }
    Ok(record_response(
        StatusCode::OK,
        &record,
        fields.project(&record),
    ))
}

/// The `data` object of a write body, keeping only fields the resource has (Clio drops
/// unknown keys silently) and none the simulator maintains.
pub(crate) fn write_body(resource: Resource, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_parameter(format!("the body is not valid JSON: {error}")))?;
    let Some(Value::Object(data)) = parsed.get("data") else {
        return Err(ApiError::bad_parameter(
            "the body must be {\"data\": {...}}",
        ));
    };
    let known = schema(resource);
    Ok(data
        .iter()
        .filter(|(name, _)| !MAINTAINED.contains(&name.as_str()))
        .filter(|(name, _)| known.iter().any(|(field, _)| field == name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect())
}

pub(crate) fn update(
    state: &RegionState,
    data: &Dataset,
    resource: Resource,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let fields = Fields::parse(resource, params.get("fields"))?;
    let (key, record) = find(data, resource, id)?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    if if_match.is_some_and(|value| !names_etag(value, etag_of(&record))) {
        return Err(ApiError::precondition_failed());
    }
    let patch = write_body(resource, body)?;
    let updated = data
        .update(resource, key, &patch, state.shared.clock.now())
        .ok_or_else(ApiError::not_found)?;
    webhooks::record_changed(
        state,
        Change {
            account: data.account(),
            resource,
            key,
            before: Some(&record),
            after: Some(&updated),
        },
    );
    Ok(record_response(
        StatusCode::OK,
        &updated,
        fields.project(&updated),
    ))
}

pub(crate) fn who_am_i(
    data: &Dataset,
    user_key: i64,
    params: &Params,
) -> Result<Response, ApiError> {
    let fields = Fields::parse(Resource::Users, params.get("fields"))?;
    let record = data
        .get(Resource::Users, user_key)
        .ok_or_else(ApiError::not_found)?;
    Ok(record_response(
        StatusCode::OK,
        &record,
        fields.project(&record),
    ))
}
