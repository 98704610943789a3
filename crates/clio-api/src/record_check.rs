//! Checking each record of a Clio page on its own, so that one record Postgres cannot hold
//! costs only itself: the rest of the page is stored and the job goes on. Records are
//! kept in Postgres `jsonb` (by the importer, this crate's reader of lists), so what
//! `jsonb` refuses is checked out here, where each record's raw text is still at hand.
//!
//! A page is read as an envelope whose `data` holds each record's raw JSON text
//! ([`serde_json::value::RawValue`], which does not limit nesting); each record is then
//! parsed alone. A record is skipped, with the reason, when it
//! - is larger than `importer.max_record_bytes`;
//! - holds bytes that are not UTF-8;
//! - is not JSON serde_json can read: a lone UTF-16 surrogate (`"\ud800"`), nesting deeper
//!   than 128 levels, a number out of range;
//! - holds a NUL (`\u0000`) in any string or key: Postgres `jsonb` cannot store it.
//!
//! Anything else is stored exactly as Clio sent it.

use serde::Deserialize;
use serde_json::Value;

use crate::printable::printable;

/// A record left out of a page, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedRecord {
    /// The record's `id` as Clio sent it, when it could be read.
    pub id: Option<Value>,
    /// Printable and short: safe to store and show.
    pub reason: String,
}

/// Longest reason kept (serde's messages are short; this bounds the path of a NUL).
const MAX_REASON_CHARS: usize = 500;

impl SkippedRecord {
    pub fn new(id: Option<Value>, reason: impl AsRef<str>) -> Self {
        SkippedRecord {
            id,
            reason: printable(reason.as_ref(), MAX_REASON_CHARS),
        }
    }

    /// The id as text for the record's row in `skipped_records`: printable and short.
    pub fn id_text(&self) -> Option<String> {
        match self.id.as_ref()? {
            Value::String(s) => Some(printable(s, 128)),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Checks one record's raw text: the record to store, or why it is skipped.
pub fn check(text: &str, max_record_bytes: usize) -> Result<Value, SkippedRecord> {
    if text.len() > max_record_bytes {
        return Err(SkippedRecord::new(
            id_of(text),
            format!(
                "the record is {} bytes, over the importer.max_record_bytes limit of {max_record_bytes}",
                text.len()
            ),
        ));
    }
    let record: Value = serde_json::from_str(text)
        .map_err(|error| SkippedRecord::new(id_of(text), format!("not storable JSON: {error}")))?;
    if let Some(path) = nul_at(&record, &mut String::new()) {
        let path = if path.is_empty() { "/".into() } else { path };
        return Err(SkippedRecord::new(
            record.get("id").cloned(),
            format!(
                "holds a NUL character (\\u0000) at {path}, which Postgres cannot store in jsonb"
            ),
        ));
    }
    Ok(record)
}

/// The record's `id` read without building the rest (which may be what is wrong with
/// it): serde skips other keys without parsing their strings or limiting their depth.
fn id_of(text: &str) -> Option<Value> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<Value>,
    }
    serde_json::from_str::<IdOnly>(text)
        .ok()?
        .id
        .filter(|id| matches!(id, Value::String(_) | Value::Number(_)))
}

/// The JSON pointer of the first string or key holding a NUL. serde_json has already
/// bounded the depth (128), so the recursion is bounded too.
fn nul_at(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(|| path.clone()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("/{i}"));
            let found = nul_at(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let len = path.len();
            path.push('/');
            path.push_str(&key.replace('~', "~0").replace('/', "~1"));
            let found = if key.contains('\0') {
                Some(path.clone())
            } else {
                nul_at(item, path)
            };
            path.truncate(len);
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A page body as text, and where bytes that are not UTF-8 were replaced (offsets into the
/// text, each the start of a U+FFFD), so the records holding them can be skipped while
/// the rest of the page is read.
pub struct PageText {
    pub text: String,
    pub replaced: Vec<usize>,
}

impl PageText {
    pub fn new(bytes: &[u8]) -> PageText {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return PageText {
                text: text.to_owned(),
                replaced: Vec::new(),
            };
        }
        let mut text = String::with_capacity(bytes.len() + 16);
        let mut replaced = Vec::new();
        for chunk in bytes.utf8_chunks() {
            text.push_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                replaced.push(text.len());
                text.push(char::REPLACEMENT_CHARACTER);
            }
        }
        PageText { text, replaced }
    }

    /// Whether `part` (a slice of [`PageText::text`]) covers a replaced byte.
    pub fn has_replacement(&self, part: &str) -> bool {
        let start = (part.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        let end = start + part.len();
        self.replaced.iter().any(|at| (start..end).contains(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn ordinary_records_pass_unchanged() {
        let text =
            r#"{"id":1,"name":"Zoë \ud83d\ude00 \"quoted\"","nested":{"a":[1,2.5,null,true]}}"#;
        let record = check(text, MAX).unwrap();
        assert_eq!(record["name"], "Zoë 😀 \"quoted\"");
        assert_eq!(record, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn a_nul_anywhere_is_skipped_with_its_path() {
        let skipped = check(r#"{"id":7,"name":"a\u0000b"}"#, MAX).unwrap_err();
        assert_eq!(skipped.id, Some(Value::from(7)));
        assert!(skipped.reason.contains("NUL") && skipped.reason.contains("/name"));

        let skipped = check(r#"{"id":"s-1","a":{"b\u0000":1}}"#, MAX).unwrap_err();
        assert_eq!(skipped.id_text().as_deref(), Some("s-1"));
        assert!(skipped.reason.contains("/a/b\\0"), "{}", skipped.reason);

        let skipped = check(r#"{"id":8,"list":["ok","\u0000"]}"#, MAX).unwrap_err();
        assert!(skipped.reason.contains("/list/1"), "{}", skipped.reason);
    }

    #[test]
    fn a_lone_surrogate_is_skipped_and_its_id_still_read() {
        let skipped = check(r#"{"id":9,"name":"x\ud800y"}"#, MAX).unwrap_err();
        assert_eq!(skipped.id, Some(Value::from(9)));
        // serde_json: "unexpected end of hex escape" (or "lone leading surrogate").
        assert!(skipped.reason.contains("escape"), "{}", skipped.reason);
    }

    #[test]
    fn deep_nesting_is_skipped_and_its_id_still_read() {
        let deep = format!(r#"{{"id":10,"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let skipped = check(&deep, MAX).unwrap_err();
        assert_eq!(skipped.id, Some(Value::from(10)));
        assert!(
            skipped.reason.contains("recursion limit"),
            "{}",
            skipped.reason
        );
        // 100 levels is fine.
        let ok = format!(r#"{{"id":11,"x":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(check(&ok, MAX).is_ok());
    }

    #[test]
    fn an_oversized_record_is_skipped() {
        let big = format!(r#"{{"id":12,"note":"{}"}}"#, "x".repeat(2_000));
        let skipped = check(&big, 1_000).unwrap_err();
        assert_eq!(skipped.id, Some(Value::from(12)));
        assert!(
            skipped.reason.contains("max_record_bytes"),
            "{}",
            skipped.reason
        );
    }

    #[test]
    fn ids_are_printable_and_short() {
        let skipped = SkippedRecord::new(Some(Value::from("a\0b".repeat(100))), "r\0");
        let id = skipped.id_text().unwrap();
        assert!(
            !id.contains('\0') && id.chars().count() <= 2 * 128 + 1,
            "{id}"
        );
        assert_eq!(skipped.reason, "r\\0");
        assert_eq!(
            SkippedRecord::new(Some(Value::from(true)), "r").id_text(),
            None
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_located() {
        let page = PageText::new(b"[\"ok\",\"b\xffd\"]");
        assert_eq!(page.replaced.len(), 1);
        let raws: Vec<&serde_json::value::RawValue> = serde_json::from_str(&page.text).unwrap();
        assert!(!page.has_replacement(raws[0].get()));
        assert!(page.has_replacement(raws[1].get()));
    }
}
