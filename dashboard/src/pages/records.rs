//! The records browser: what import-svc stored for one Clio account and resource, newest
//! change first as import-svc pages them, each record's JSON a click away. For people with
//! the data-reader role (import-svc checks it and the tenant).

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use proto::imports::v1::ListRecordsRequest;
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, render};
use crate::AppState;
use crate::backends::IMPORT;
use crate::display;
use crate::error::PageError;

const PAGE_SIZE: u32 = 50;
/// The resources import-svc stores, as its API names them.
const RESOURCES: [&str; 5] = [
    "contacts",
    "matters",
    "calendar_entries",
    "activities",
    "users",
];

pub struct RecordRow {
    pub clio_id: String,
    pub updated_at: String,
    pub deleted: bool,
    /// The record's name or summary, when it has one.
    pub title: String,
    /// Pretty-printed JSON.
    pub data: String,
}

#[derive(Template)]
#[template(path = "records.html")]
struct RecordsPage {
    chrome: Chrome,
    account: String,
    resource: String,
    resources: [&'static str; 5],
    include_deleted: bool,
    records: Vec<RecordRow>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct RecordsQuery {
    #[serde(default)]
    account: String,
    #[serde(default)]
    resource: String,
    /// "1": also records Clio no longer returns.
    #[serde(default)]
    deleted: String,
    #[serde(default)]
    page_token: String,
}

fn title(data: &serde_json::Value) -> String {
    ["name", "display_number", "summary", "description", "note"]
        .iter()
        .find_map(|key| data.get(key).and_then(serde_json::Value::as_str))
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect()
}

pub async fn browse(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<RecordsQuery>,
) -> Result<Html<String>, PageError> {
    signed.require(Role::DataReader, "Browsing imported records")?;
    let resource = if query.resource.is_empty() {
        "contacts".to_owned()
    } else if RESOURCES.contains(&query.resource.as_str()) {
        query.resource.clone()
    } else {
        return Err(PageError::bad_request(
            "resource: contacts, matters, calendar_entries, activities or users",
        ));
    };
    let account = query.account.trim().to_owned();
    let include_deleted = query.deleted == "1";
    let (records, next) = if account.is_empty() {
        (Vec::new(), None)
    } else {
        let answer = state
            .backends
            .imports(&signed.0.person)
            .list_records(ListRecordsRequest {
                clio_account_id: account.clone(),
                resource: resource.clone(),
                include_deleted,
                page_size: PAGE_SIZE,
                page_token: query.page_token.clone(),
                ..ListRecordsRequest::default()
            })
            .await
            .map_err(|s| PageError::from_status(IMPORT, &s))?
            .into_inner();
        let records = answer
            .records
            .into_iter()
            .map(|r| {
                let data: serde_json::Value =
                    serde_json::from_str(&r.data_json).unwrap_or(serde_json::Value::Null);
                RecordRow {
                    title: title(&data),
                    data: serde_json::to_string_pretty(&data).unwrap_or(r.data_json),
                    clio_id: r.clio_id,
                    updated_at: display::when(r.updated_at.as_ref()),
                    deleted: r.deleted,
                }
            })
            .collect();
        let next = Some(answer.next_page_token)
            .filter(|t| !t.is_empty())
            .map(|t| {
                super::query_string(
                    "/records",
                    &[
                        ("account", account.as_str()),
                        ("resource", resource.as_str()),
                        ("deleted", query.deleted.as_str()),
                        ("page_token", t.as_str()),
                    ],
                )
            });
        (records, next)
    };
    render(&RecordsPage {
        chrome: signed.chrome("records"),
        account,
        resource,
        resources: RESOURCES,
        include_deleted,
        records,
        next,
    })
}
