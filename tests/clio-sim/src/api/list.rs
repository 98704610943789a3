//! `GET /api/v4/{resource}`: filtered, projected pages in id order, with cursor paging
//! (`meta.paging.next` carrying an opaque `page_token`) or capped offset paging.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::fields::Fields;
use super::filter::Filter;
use super::params::Params;
use crate::dataset::{Dataset, mix};
use crate::oauth::store::Bearer;
use crate::region::RegionState;
use crate::resource::{RecordId, Resource};

/// Offset paging cannot reach past this many records (Clio: `422 ArgumentError`).
pub(crate) const OFFSET_CAP: u64 = 10_000;
const TOKEN_CHECK_TAG: u64 = 0x7A6E;

/// The largest `limit` a resource accepts.
fn max_limit(resource: Resource) -> u64 {
    if resource == Resource::Users {
        2_000
    } else {
        200
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paging {
    /// Records after this key (none: from the start).
    Cursor(Option<i64>),
    Offset(u64),
}

/// An opaque cursor: the last key served, with a check so forged tokens are refused.
pub(crate) fn encode_page_token(after: i64) -> String {
    let check = mix(TOKEN_CHECK_TAG, 1, u64::from_ne_bytes(after.to_ne_bytes())) & 0xFFFF_FFFF;
    URL_SAFE_NO_PAD.encode(format!("{after}.{check:x}"))
}

pub(crate) fn decode_page_token(token: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token.trim()).ok()?).ok()?;
    let (after, _) = text.split_once('.')?;
    let after: i64 = after.parse().ok()?;
    (encode_page_token(after) == token.trim()).then_some(after)
}

fn parse_limit(resource: Resource, params: &Params) -> Result<u64, ApiError> {
    let max = max_limit(resource);
    let Some(text) = params.get("limit") else {
        return Ok(200.min(max));
    };
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| {
            ApiError::bad_parameter(format!("limit must be between 1 and {max}: {text}"))
        })
}

fn parse_paging(params: &Params, limit: u64) -> Result<Paging, ApiError> {
    if let Some(token) = params.get("page_token") {
        let after = decode_page_token(token)
            .ok_or_else(|| ApiError::bad_parameter("page_token is invalid"))?;
        return Ok(Paging::Cursor(Some(after)));
    }
    let Some(offset) = params.get("offset") else {
        return Ok(Paging::Cursor(None));
    };
    let offset: u64 = offset
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_parameter(format!("offset must be a whole number: {offset}")))?;
    if offset + limit > OFFSET_CAP {
        return Err(ApiError::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ArgumentError",
            format!(
                "offset paging is limited to {OFFSET_CAP} records; use cursor paging (page_token)"
            ),
        ));
    }
    Ok(Paging::Offset(offset))
}

/// Where the request was addressed, for the absolute `next`/`previous` URLs.
pub(crate) struct Origin<'a> {
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
}

impl Origin<'_> {
    pub(crate) fn url(&self, params: &Params, added: &[(&str, String)]) -> String {
        let query = params.encode_replacing(&["page_token", "offset"], added);
        format!("http://{}{}?{query}", self.host, self.path)
    }
}

/// One page of `resource` of `data` (the bearer's account), as the bearer's user sees it.
pub(crate) fn list(
    state: &RegionState,
    data: &Dataset,
    resource: Resource,
    params: &Params,
    origin: &Origin<'_>,
    viewer: &Bearer,
) -> Result<Response, ApiError> {
    // Visibility is set on account 1's users (the admin API's firm).
    let hidden = match viewer.account {
        1 => state.hidden_from(viewer.user_key, resource),
        _ => BTreeSet::new(),
    };
    let bytes = page_body(data, resource, params, origin, &hidden)?;
    let content_type = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    )];
    Ok((StatusCode::OK, content_type, bytes).into_response())
}

/// The serialised `{"data": [...], "meta": {...}}` of one page, without the `hidden` keys.
pub(crate) fn page_body(
    data: &Dataset,
    resource: Resource,
    params: &Params,
    origin: &Origin<'_>,
    hidden: &BTreeSet<i64>,
) -> Result<Vec<u8>, ApiError> {
    let fields = Fields::parse(resource, params.get("fields"))?;
    let limit = parse_limit(resource, params)?;
    let paging = parse_paging(params, limit)?;
    let filter = Filter::parse(resource, params)?;
    let (after, mut skip) = match paging {
        Paging::Cursor(after) => (after, 0),
        Paging::Offset(offset) => (None, offset),
    };
    let stop_after = filter.last_key();
    let capacity = usize::try_from(limit).unwrap_or(200);
    let mut page = Vec::with_capacity(capacity);
    // Positions in `page` whose record is a raw text (`Dataset::set_raw`).
    let mut raw: Vec<(usize, Arc<str>)> = Vec::new();
    let (mut more, mut last_key) = (false, None);
    let mut visit = |key, record| {
        if stop_after.is_some_and(|last| key > last) {
            return false;
        }
        if hidden.contains(&key) || !filter.matches(key, &record) {
            return true;
        }
        if skip > 0 {
            skip -= 1;
            return true;
        }
        if page.len() == capacity {
            more = true;
            return false;
        }
        last_key = Some(key);
        match data.raw(resource, key) {
            Some(text) => {
                raw.push((page.len(), text));
                page.push(Value::Null);
            }
            None => page.push(fields.project(&record)),
        }
        true
    };
    match filter
        .calendar_entry()
        .filter(|_| resource == Resource::Activities)
    {
        // Without walking every activity: a million-record data set answers this at once.
        Some(entry) => data.scan_activities_of_entry(&RecordId::from(entry), after, &mut visit),
        None => data.scan(resource, after, &mut visit),
    }
    let mut paging_meta = Map::new();
    match (paging, more, last_key) {
        (Paging::Cursor(_), true, Some(last)) => {
            let next = origin.url(params, &[("page_token", encode_page_token(last))]);
            paging_meta.insert("next".to_owned(), Value::String(next));
        }
        (Paging::Offset(offset), more, _) => {
            if more {
                let next = origin.url(params, &[("offset", (offset + limit).to_string())]);
                paging_meta.insert("next".to_owned(), Value::String(next));
            }
            if offset > 0 {
                let previous = origin.url(
                    params,
                    &[("offset", offset.saturating_sub(limit).to_string())],
                );
                paging_meta.insert("previous".to_owned(), Value::String(previous));
            }
        }
        _ => {}
    }
    if !raw.is_empty() {
        return Ok(with_raw_records(&page, &raw, &Value::Object(paging_meta)));
    }
    let body = json!({"data": page, "meta": {"paging": paging_meta}});
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

/// A page whose records at the `raw` positions are raw texts, written as they are.
fn with_raw_records(page: &[Value], raw: &[(usize, Arc<str>)], paging: &Value) -> Vec<u8> {
    let mut body = br#"{"data":["#.to_vec();
    for (index, record) in page.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        match raw.iter().find(|(at, _)| *at == index) {
            Some((_, text)) => body.extend_from_slice(text.as_bytes()),
            None => body.extend(serde_json::to_vec(record).unwrap_or_default()),
        }
    }
    body.extend_from_slice(br#"],"meta":{"paging":"#);
    body.extend(serde_json::to_vec(paging).unwrap_or_default());
    body.extend_from_slice(b"}}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_forgeries_are_refused() {
        let token = encode_page_token(2_200_000_417);
        assert_eq!(decode_page_token(&token), Some(2_200_000_417));
        let forged = URL_SAFE_NO_PAD.encode("2200000418.0");
        assert_eq!(decode_page_token(&forged), None);
        assert_eq!(decode_page_token("not a token"), None);
    }
}
