//! The canonical bytes an event's hash covers, and the hash chain rule.
//!
//! An event's canonical bytes are one JSON object, written without whitespace, with the
//! keys of every object (the event, `actor`, `subject`, `refs` and the payload at any
//! depth) in bytewise order:
//!
//! ```text
//! {"actor":{"id":"ops","kind":"service"},"event_id":"0190…","kind":"connection_granted",
//!  "occurred_at":"2025-01-02T03:04:05.000006Z","payload":{…},"reason":"",
//!  "recorded_at":"2025-01-02T03:04:05.123456Z","refs":{"app_id":"…","clio_account_id":"…",
//!  "clio_user_id":"…","connection_id":"…","job_id":"","principal":"…","region":"us"},
//!  "risk_tier":"high","scopes":["activities:write","calendar:read"],"sequence":7,
//!  "source":"auth-svc","subject":{"id":"…","kind":"connection"},"tenant":"firm-a","v":1}
//! ```
//!
//! - Strings use JSON's minimal escaping (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other
//!   control characters as `\u00xx`); everything else is literal UTF-8.
//! - Times are UTC, RFC 3339, exactly six fractional digits (Postgres keeps microseconds,
//!   so input times are truncated to microseconds before anything is hashed).
//! - Enum values are lower-case names: kinds as in `EventKind` without the prefix, actor
//!   and subject kinds likewise, regions `us`/`eu`/`ca`/`au` (empty when unset), risk tiers
//!   `low`/`medium`/`high`/`very_high` (empty when unset). Scopes are the normalised set
//!   (`<family>:<access>`, one per family, sorted).
//! - Payload numbers are written as serde_json writes them (shortest round-trip form),
//!   except that a zero of any sign is `0`, so the bytes survive a round trip through
//!   Postgres `jsonb`.
//! - `recorded_at` and `sequence` are included: moving an event in time or in the chain
//!   breaks its hash, not only its neighbours' links.
//! - `writer`, the credential that recorded the event, is the last key (after `"v"`) and is
//!   present only when set: events stored before writers were recorded have none, so their
//!   bytes, and hashes, are unchanged (the version stays 1).
//!
//! The chain: `hash = hex(SHA-256(prev_hash ‖ canonical bytes))`, where `prev_hash` is the
//! previous event's `hash` as 64 lower-case hex ASCII characters, and the first event of a
//! tenant uses [`GENESIS_HASH`] (64 zeros).
//!
//! Checkpoints sign [`checkpoint_message`]: the same canonical JSON form of
//! `{"head_hash","key_id","purpose":"clio-connect.audit.checkpoint.v1","sequence",
//! "signed_at","tenant"}`.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of a tenant's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The value of the `v` key; bumped if the canonical form ever changes.
pub const CANONICAL_VERSION: u32 = 1;

/// What a checkpoint signature is for, so a signature can never be replayed as another
/// kind of statement.
pub const CHECKPOINT_PURPOSE: &str = "clio-connect.audit.checkpoint.v1";

/// The link to the previous event: `hex(SHA-256(prev_hash ‖ canonical))`.
pub fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical);
    hex::encode(hasher.finalize())
}

/// An instant as the canonical form writes it.
pub fn format_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Writes `value` in canonical form: sorted keys, no whitespace, zero as `0`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            // jsonb has no negative zero and prints 0.0 as "0.0", -0 as "0": one spelling
            // for every zero keeps the bytes stable through the database.
            if number.as_f64() == Some(0.0) {
                out.push(b'0');
            } else {
                // Number's Display is serde_json's own formatting (itoa / ryu).
                let _ = write!(out, "{number}");
            }
        }
        Value::String(text) => write_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps (serde_json's `preserve_order`
            // feature may be on somewhere in the build).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string with minimal escaping.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The canonical text of a JSON document given as text.
pub fn canonical_text(json: &str) -> Result<String, serde_json::Error> {
    let value: Value = serde_json::from_str(json)?;
    Ok(canonical_value(&value))
}

pub fn canonical_value(value: &Value) -> String {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, value);
    // Only valid UTF-8 was written.
    String::from_utf8(out).unwrap_or_default()
}

/// A canonical JSON object written key by key; keys must be pushed in bytewise order
/// (checked in debug builds).
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last_key: Option<&'static str>,
}

impl<'a> ObjectWriter<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last_key: None,
        }
    }

    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                self.last_key
                    .is_none_or(|last| last.as_bytes() < key.as_bytes()),
                "canonical keys out of order: {key}"
            );
            self.last_key = Some(key);
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_str(out, value);
        self
    }

    pub fn uint(&mut self, key: &'static str, value: u64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    /// A value that is already canonical JSON text.
    pub fn raw(&mut self, key: &'static str, canonical: &str) -> &mut Self {
        let out = self.key(key);
        out.extend_from_slice(canonical.as_bytes());
        self
    }

    pub fn strings(&mut self, key: &'static str, values: &[String]) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, value);
        }
        out.push(b']');
        self
    }

    /// A nested object.
    pub fn object(
        &mut self,
        key: &'static str,
        fill: impl FnOnce(&mut ObjectWriter<'_>),
    ) -> &mut Self {
        let out = self.key(key);
        let mut nested = ObjectWriter::begin(out);
        fill(&mut nested);
        nested.end();
        self
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(
    tenant: &str,
    sequence: u64,
    head_hash: &str,
    signed_at: &DateTime<Utc>,
    key_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut object = ObjectWriter::begin(&mut out);
    object
        .str("head_hash", head_hash)
        .str("key_id", key_id)
        .str("purpose", CHECKPOINT_PURPOSE)
        .uint("sequence", sequence)
        .str("signed_at", &format_time(signed_at))
        .str("tenant", tenant);
    object.end();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_sorted_at_every_depth_and_compact() {
        let text =
            canonical_text(r#"{ "b": 1, "a": {"z": [true, null, "x"], "y": 2.5} }"#).unwrap();
        assert_eq!(text, r#"{"a":{"y":2.5,"z":[true,null,"x"]},"b":1}"#);
    }

    #[test]
    fn zeros_have_one_spelling() {
        for zero in ["0", "-0", "0.0", "-0.0", "0e10"] {
            assert_eq!(
                canonical_text(&format!("[{zero}]")).unwrap(),
                "[0]",
                "{zero}"
            );
        }
    }

    #[test]
    fn canonical_text_is_a_fixed_point() {
        let inputs = [
            r#"{"n":[1,1.0,1.5e300,1e20,18446744073709551616,-12,0.30000000000000004,123456789012345678]}"#,
            r#"{"s":"tab\there \u00e9 \ud83d\ude00 quote\" back\\ nl\n ctl\u0001"}"#,
        ];
        for input in inputs {
            let once = canonical_text(input).unwrap();
            let twice = canonical_text(&once).unwrap();
            assert_eq!(once, twice);
        }
    }

    #[test]
    fn the_chain_rule_is_sha256_over_prev_hash_then_bytes() {
        // printf '%s%s' "$GENESIS" '{}' | sha256sum
        assert_eq!(
            chain_hash(GENESIS_HASH, b"{}"),
            hex::encode(Sha256::digest(format!("{GENESIS_HASH}{{}}").as_bytes()))
        );
    }

    #[test]
    fn checkpoint_message_is_canonical() {
        let at = DateTime::from_timestamp(1_700_000_000, 1_000).unwrap();
        let message = checkpoint_message("t", 3, "ab", &at, "k");
        let text = String::from_utf8(message).unwrap();
        assert_eq!(canonical_text(&text).unwrap(), text);
        assert!(
            text.contains(r#""signed_at":"2023-11-14T22:13:20.000001Z""#),
            "{text}"
        );
    }
}
