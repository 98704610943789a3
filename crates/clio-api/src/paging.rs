//! One page of a Clio list: its records, Clio's `meta.paging.next` link to the next page
//! and `meta.records` total.
//!
//! The envelope is read strictly; each record of `data` is kept as raw text and checked
//! on its own ([`crate::record_check`]), so one bad record does not sink the page.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::error::ClioError;
use crate::record_check::{self, PageText, SkippedRecord};

/// One page of records.
#[derive(Debug)]
pub struct Page {
    /// The records to store, in Clio's order.
    pub records: Vec<serde_json::Value>,
    /// The records left out of `records`, and why ([`record_check`]).
    pub skipped: Vec<SkippedRecord>,
    pub next: Option<Url>,
    /// Clio's count of all records for the query, when it gives one.
    pub total: Option<u64>,
    /// Clio's clock when it answered (the `Date` header), when it sent one.
    pub server_date: Option<DateTime<Utc>>,
}

/// A page with each record still raw text, so one bad record does not sink the page.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    paging: Option<Paging>,
    #[serde(default)]
    records: Option<u64>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

/// A page: the envelope strictly, each record on its own ([`record_check`]).
pub(crate) fn parse_page(bytes: &[u8], max_record_bytes: usize) -> Result<Page, ClioError> {
    let page_text = PageText::new(bytes);
    let envelope: Envelope =
        serde_json::from_str(&page_text.text).map_err(|e| ClioError::MalformedPage {
            detail: e.to_string(),
        })?;
    let mut records = Vec::with_capacity(envelope.data.len());
    let mut skipped = Vec::new();
    for raw in envelope.data {
        let text = raw.get();
        if page_text.has_replacement(text) {
            skipped.push(SkippedRecord::new(None, "holds bytes that are not UTF-8"));
            continue;
        }
        match record_check::check(text, max_record_bytes) {
            Ok(record) => records.push(record),
            Err(skip) => skipped.push(skip),
        }
    }
    let meta = envelope.meta;
    let next = match meta
        .as_ref()
        .and_then(|m| m.paging.as_ref())
        .and_then(|p| p.next.as_deref())
    {
        None | Some("") => None,
        Some(link) => Some(Url::parse(link).map_err(|e| ClioError::MalformedPage {
            detail: format!("paging.next: {e}"),
        })?),
    };
    Ok(Page {
        records,
        skipped,
        next,
        total: meta.and_then(|m| m.records),
        server_date: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn pages_parse_with_and_without_next() {
        let page = parse_page(br#"{"data":[{"id":1}],"meta":{"paging":{"next":"http://h/x?page_token=a"},"records":7}}"#, MAX).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.total, Some(7));
        assert!(page.next.is_some());
        let last = parse_page(br#"{"data":[],"meta":{"paging":{}}}"#, MAX).unwrap();
        assert!(last.next.is_none());
        assert!(parse_page(br#"{"data":{"id":1}}"#, MAX).is_err());
    }

    #[test]
    fn hostile_records_are_skipped_and_the_rest_of_the_page_kept() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let mut body = format!(
            r#"{{"data":[{{"id":1,"name":"good"}},{{"id":2,"name":"a\u0000b"}},{{"id":3,"name":"\ud800"}},{{"id":4,"x":{deep}}},{{"id":5,"big":"{}"}},{{"id":6,"name":"bad:?"}},{{"id":7,"name":"also good \ud83d\ude00"}}],"meta":{{"paging":{{}}}}}}"#,
            "x".repeat(2_000)
        )
        .into_bytes();
        // A byte that is not UTF-8 in record 6.
        let at = body.windows(5).position(|w| w == b"bad:?").unwrap() + 4;
        body[at] = 0xff;
        let page = parse_page(&body, 1_000).unwrap();
        let ids: Vec<_> = page.records.iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids, [1, 7]);
        assert_eq!(page.records[1]["name"], "also good 😀");
        let skipped: Vec<_> = page
            .skipped
            .iter()
            .map(|s| (s.id_text(), s.reason.clone()))
            .collect();
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        let reason_of = |i: usize| &skipped[i].1;
        assert_eq!(skipped[0].0.as_deref(), Some("2"));
        assert!(reason_of(0).contains("NUL"), "{skipped:?}");
        assert_eq!(skipped[1].0.as_deref(), Some("3"));
        assert!(reason_of(1).contains("hex escape"), "{skipped:?}");
        assert_eq!(skipped[2].0.as_deref(), Some("4"));
        assert!(reason_of(2).contains("recursion limit"), "{skipped:?}");
        assert_eq!(skipped[3].0.as_deref(), Some("5"));
        assert!(reason_of(3).contains("max_record_bytes"), "{skipped:?}");
        assert!(reason_of(4).contains("not UTF-8"), "{skipped:?}");
    }
}
