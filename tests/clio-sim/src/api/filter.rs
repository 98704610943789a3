//! List filters: `updated_since`, `created_since`, `ids[]`, `query` and each resource's
//! own (`matter_id`, `client_id`, `status`, ...). Misspelt filters are ignored, as Clio
//! ignores them; a known filter with a bad value is a 400 naming it.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::error::ApiError;
use super::params::Params;
use crate::resource::{RecordId, Resource};

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `field{id}` equals the value.
    RefId(&'static str),
    /// `field` is one of the comma-separated values (case-insensitive).
    OneOf(&'static str),
    Bool(&'static str),
    /// `end_at` at or after the time.
    EndsFrom,
    /// `start_at` at or before the time.
    StartsUntil,
}

fn resource_filter(resource: Resource, name: &str) -> Option<Kind> {
    use Resource::*;
    let kind = match (resource, name) {
        (Matters, "client_id") => Kind::RefId("client"),
        (Matters, "practice_area_id") => Kind::RefId("practice_area"),
        (Matters, "responsible_attorney_id") => Kind::RefId("responsible_attorney"),
        (Matters, "status") => Kind::OneOf("status"),
        (CalendarEntries, "matter_id") | (Activities, "matter_id") => Kind::RefId("matter"),
        (CalendarEntries, "calendar_id") => Kind::RefId("calendar_owner"),
        (CalendarEntries, "from") => Kind::EndsFrom,
        (CalendarEntries, "to") => Kind::StartsUntil,
        (Activities, "user_id") => Kind::RefId("user"),
        (Activities, "calendar_entry_id") => Kind::RefId("calendar_entry"),
        (Activities, "type") | (Contacts, "type") => Kind::OneOf("type"),
        (Contacts, "client_only") => Kind::Bool("is_client"),
        (Users, "enabled") => Kind::Bool("enabled"),
        _ => return None,
    };
    Some(kind)
}

/// Fields `query` searches, per resource.
fn searched(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Users => &["name", "email"],
        Resource::Contacts => &["name", "primary_email_address"],
        Resource::Matters => &["display_number", "description"],
        Resource::CalendarEntries => &["summary", "description"],
        Resource::Activities => &["note"],
    }
}

#[derive(Clone, Debug)]
enum Condition {
    RefId(&'static str, String),
    OneOf(&'static str, Vec<String>),
    Bool(&'static str, bool),
    EndsFrom(DateTime<Utc>),
    StartsUntil(DateTime<Utc>),
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    updated_since: Option<DateTime<Utc>>,
    created_since: Option<DateTime<Utc>>,
    /// Ordering keys of `ids[]`.
    pub(crate) ids: Option<BTreeSet<i64>>,
    query: Option<(&'static [&'static str], String)>,
    conditions: Vec<Condition>,
}

/// ISO-8601 time or date (a date means its midnight UTC).
fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let value = value.trim();
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
        .ok_or_else(|| {
            ApiError::bad_parameter(format!("{name} is not a valid ISO-8601 time: {value}"))
        })
}

fn record_time(record: &Value, field: &str) -> Option<DateTime<Utc>> {
    let text = record.get(field)?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl Filter {
    pub(crate) fn parse(resource: Resource, params: &Params) -> Result<Filter, ApiError> {
        let mut filter = Filter::default();
        if let Some(value) = params.get("updated_since") {
            filter.updated_since = Some(parse_time("updated_since", value)?);
        }
        if let Some(value) = params.get("created_since") {
            filter.created_since = Some(parse_time("created_since", value)?);
        }
        let ids: Vec<&str> = params.all("ids[]").chain(params.all("ids")).collect();
        if !ids.is_empty() {
            let keys = ids
                .iter()
                .flat_map(|list| list.split(','))
                .map(|id| {
                    RecordId::from(id.trim()).key().ok_or_else(|| {
                        ApiError::bad_parameter(format!("ids[] contains an invalid id: {id}"))
                    })
                })
                .collect::<Result<_, _>>()?;
            filter.ids = Some(keys);
        }
        if let Some(query) = params.get("query").filter(|q| !q.trim().is_empty()) {
            filter.query = Some((searched(resource), query.trim().to_lowercase()));
        }
        for (name, kind) in [
            "client_id",
            "practice_area_id",
            "responsible_attorney_id",
            "status",
            "matter_id",
            "calendar_id",
            "from",
            "to",
            "user_id",
            "calendar_entry_id",
            "type",
            "client_only",
            "enabled",
        ]
        .into_iter()
        .filter_map(|name| resource_filter(resource, name).map(|kind| (name, kind)))
        {
            let Some(value) = params.get(name) else {
                continue;
            };
            let condition = match kind {
                Kind::RefId(field) => {
                    let numeric = value.trim().parse::<i64>().is_ok();
                    if !numeric && resource != Resource::Activities {
                        return Err(ApiError::bad_parameter(format!(
                            "{name} must be an id: {value}"
                        )));
                    }
                    Condition::RefId(field, value.trim().to_owned())
                }
                Kind::OneOf(field) => Condition::OneOf(
                    field,
                    value.split(',').map(|v| v.trim().to_lowercase()).collect(),
                ),
                Kind::Bool(field) => match value.trim() {
                    "true" => Condition::Bool(field, true),
                    "false" => Condition::Bool(field, false),
                    _ => {
                        return Err(ApiError::bad_parameter(format!(
                            "{name} must be true or false"
                        )));
                    }
                },
                Kind::EndsFrom => Condition::EndsFrom(parse_time(name, value)?),
                Kind::StartsUntil => Condition::StartsUntil(parse_time(name, value)?),
            };
            filter.conditions.push(condition);
        }
        Ok(filter)
    }

    /// The calendar entry id `calendar_entry_id` names, if the filter has one (an
    /// activities listing can then skip the generated activities that cannot match).
    pub(crate) fn calendar_entry(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find_map(|condition| match condition {
                Condition::RefId("calendar_entry", id) => Some(id.as_str()),
                _ => None,
            })
    }

    /// The highest key `ids[]` allows, so a scan can stop there.
    pub(crate) fn last_key(&self) -> Option<i64> {
        self.ids.as_ref().and_then(|ids| ids.last().copied())
    }

    pub(crate) fn matches(&self, key: i64, record: &Value) -> bool {
        if self.ids.as_ref().is_some_and(|ids| !ids.contains(&key)) {
            return false;
        }
        if let Some(since) = self.updated_since
            && record_time(record, "updated_at").is_none_or(|t| t < since)
        {
            return false;
        }
        if let Some(since) = self.created_since
            && record_time(record, "created_at").is_none_or(|t| t < since)
        {
            return false;
        }
        if let Some((fields, needle)) = &self.query {
            let found = fields.iter().any(|field| {
                record
                    .get(*field)
                    .and_then(Value::as_str)
                    .is_some_and(|text| text.to_lowercase().contains(needle.as_str()))
            });
            if !found {
                return false;
            }
        }
        self.conditions.iter().all(|condition| match condition {
            Condition::RefId(field, id) => record
                .get(*field)
                .and_then(|linked| linked.get("id"))
                .and_then(id_text)
                .is_some_and(|linked| &linked == id),
            Condition::OneOf(field, values) => record
                .get(*field)
                .and_then(Value::as_str)
                .is_some_and(|v| values.contains(&v.to_lowercase())),
            Condition::Bool(field, expected) => {
                record.get(*field).and_then(Value::as_bool) == Some(*expected)
            }
            Condition::EndsFrom(from) => record_time(record, "end_at").is_some_and(|t| t >= *from),
            Condition::StartsUntil(to) => record_time(record, "start_at").is_some_and(|t| t <= *to),
        })
    }
}
