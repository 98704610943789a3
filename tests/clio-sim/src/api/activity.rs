//! `POST /api/v4/activities`: creating a time (or expense) entry, validated as Clio
//! validates it, answered `201` with the new record.
//!
//! `type` (TimeEntry or ExpenseEntry), `date` (`YYYY-MM-DD`), a positive `quantity` and an
//! existing `user{id}` are required, and an existing `matter{id}` for a time entry;
//! `calendar_entry{id}` is optional but must exist. Anything else is `422 ValidationError`;
//! unknown keys are dropped. Created entries are kept in the account's records (so
//! listings, filters, `updated_since` and show see them) and remembered for the admin
//! `GET /__sim/activities/created`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::fields::Fields;
use super::params::Params;
use super::record::write_body;
use crate::dataset::Dataset;
use crate::region::RegionState;
use crate::resource::{RecordId, Resource};
use crate::webhooks::{self, Change};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::typed(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", message)
}

/// The linked record `data[field].id` names, which must exist.
fn linked(
    records: &Dataset,
    data: &Map<String, Value>,
    field: &str,
    resource: Resource,
) -> Result<Option<Value>, ApiError> {
    let Some(reference) = data.get(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let id = reference
        .get("id")
        .map(RecordId::from)
        .ok_or_else(|| invalid(format!("{field} must be {{\"id\": ...}}")))?;
    records
        .find(resource, &id)
        .map(Some)
        .ok_or_else(|| invalid(format!("{field} {id} does not exist")))
}

fn field_of(record: &Value, name: &str) -> Value {
    record.get(name).cloned().unwrap_or(Value::Null)
}

pub(crate) fn create(
    state: &RegionState,
    records: &Dataset,
    params: &Params,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let fields = Fields::parse(Resource::Activities, params.get("fields"))?;
    let data = write_body(Resource::Activities, body)?;
    let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "TimeEntry" && kind != "ExpenseEntry" {
        return Err(invalid("type must be TimeEntry or ExpenseEntry"));
    }
    let date = data.get("date").and_then(Value::as_str).unwrap_or_default();
    if NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
        return Err(invalid("date must be a date (YYYY-MM-DD)"));
    }
    let quantity = data
        .get("quantity")
        .and_then(Value::as_f64)
        .filter(|q| *q > 0.0)
        .ok_or_else(|| invalid("quantity must be a positive number"))?;
    let matter = linked(records, &data, "matter", Resource::Matters)?;
    if kind == "TimeEntry" && matter.is_none() {
        return Err(invalid("matter can't be blank"));
    }
    let user = linked(records, &data, "user", Resource::Users)?
        .ok_or_else(|| invalid("user can't be blank"))?;
    let calendar_entry = linked(records, &data, "calendar_entry", Resource::CalendarEntries)?;
    let rate = user.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
    let (hours, price) = if kind == "TimeEntry" {
        (
            quantity / 3600.0,
            data.get("price").and_then(Value::as_f64).unwrap_or(rate),
        )
    } else {
        (
            quantity,
            data.get("price").and_then(Value::as_f64).unwrap_or(0.0),
        )
    };
    let record = json!({
        "type": kind,
        "date": date,
        "quantity": data.get("quantity"),
        "quantity_in_hours": hours,
        "price": price,
        "total": (price * hours * 100.0).round() / 100.0,
        "note": data.get("note").cloned().unwrap_or(Value::Null),
        "billed": false,
        "non_billable": data.get("non_billable").and_then(Value::as_bool).unwrap_or(false),
        "on_bill": false,
        "matter": matter.map(|m| json!({"id": field_of(&m, "id"), "display_number": field_of(&m, "display_number")})),
        "user": json!({"id": field_of(&user, "id"), "name": field_of(&user, "name")}),
        "calendar_entry": calendar_entry.map(|c| json!({"id": field_of(&c, "id")})),
    });
    let Value::Object(record) = record else {
        return Err(invalid("the entry could not be built"));
    };
    let created = records.create_through_api(record, state.shared.clock.now());
    if let Some(key) = created.get("id").and_then(Value::as_i64) {
        webhooks::record_changed(
            state,
            Change {
                account: records.account(),
                resource: Resource::Activities,
                key,
                before: None,
                after: Some(&created),
            },
        );
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"data": fields.project(&created)})),
    )
        .into_response())
}
