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

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

mod from_text;

pub use from_text::{CanonicalTextWriter, write_canonical_text};

/// `prev_hash` of a tenant's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The value of the `v` key; bumped if the canonical form ever changes.
pub const CANONICAL_VERSION: u32 = 1;

/// What a checkpoint signature is for, so a signature can never be replayed as another
/// kind of statement.
pub const CHECKPOINT_PURPOSE: &str = "clio-connect.audit.checkpoint.v1";

/// The link to the previous event: `hex(SHA-256(prev_hash ‖ canonical))`.
pub fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    chain_hash_hex(prev_hash, canonical).as_str().to_owned()
}

/// [`chain_hash`] without allocating (`Verify` computes one per stored event).
pub fn chain_hash_hex(prev_hash: &str, canonical: &[u8]) -> HashHex {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical);
    let mut hex = [0; 64];
    // 32 bytes are always 64 hex digits.
    let _ = hex::encode_to_slice(hasher.finalize(), &mut hex);
    HashHex(hex)
}

/// A SHA-256 hash as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashHex([u8; 64]);

impl HashHex {
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// An instant as the canonical form writes it.
pub fn format_time(at: &DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(27);
    write_time(&mut out, at);
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`format_time`]'s text: chrono's RFC 3339 with microseconds and `Z`, written
/// digit by digit for years 0 to 9999 (what chrono writes there, without its formatting
/// machinery: `Verify` writes two per stored event).
pub fn write_time(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    let nanos = at.nanosecond();
    let year = u32::try_from(at.date_naive().year())
        .ok()
        .filter(|year| *year <= 9999);
    let Some(year) = year.filter(|_| nanos < 1_000_000_000) else {
        // A signed year, or a leap second: chrono's own spelling.
        let text = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        out.extend_from_slice(text.as_bytes());
        return;
    };
    // The calendar fields once (each accessor of a `DateTime` converts it anew).
    let (date, time) = (at.date_naive(), at.time());
    two_digits(out, year / 100);
    two_digits(out, year % 100);
    out.push(b'-');
    two_digits(out, date.month());
    out.push(b'-');
    two_digits(out, date.day());
    out.push(b'T');
    two_digits(out, time.hour());
    out.push(b':');
    two_digits(out, time.minute());
    out.push(b':');
    two_digits(out, time.second());
    out.push(b'.');
    let micros = nanos / 1_000;
    two_digits(out, micros / 10_000);
    two_digits(out, micros / 100 % 100);
    two_digits(out, micros % 100);
    out.push(b'Z');
}

/// `value` (below 100) as two decimal digits.
fn two_digits(out: &mut Vec<u8>, value: u32) {
    // Decimal digits: below 10, so the casts keep them.
    out.extend_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]);
}

/// Writes `value` in canonical form: sorted keys, no whitespace, zero as `0`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(out, number),
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

fn write_number(out: &mut Vec<u8>, number: &Number) {
    // jsonb has no negative zero and prints 0.0 as "0.0", -0 as "0": one spelling for
    // every zero keeps the bytes stable through the database.
    if number.as_f64() == Some(0.0) {
        out.push(b'0');
    } else if let Some(value) = number.as_u64() {
        write_u64(out, value);
    } else if let Some(value) = number.as_i64() {
        // Negative here: positive integers are u64s.
        out.push(b'-');
        write_u64(out, value.unsigned_abs());
    } else {
        // Number's Display is serde_json's own formatting (ryu for floats).
        let _ = write!(out, "{number}");
    }
}

/// `value` in decimal, as `Display` (and serde_json's itoa) writes it.
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        // A decimal digit: below 10, so the cast keeps it.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// A JSON string with minimal escaping.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // Most strings need no escape at all: copied as they are, which is what serde_json
    // writes for them. (A fold with no early exit, which the compiler vectorises.)
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// The canonical text of a JSON document given as text.
pub fn canonical_text(json: &str) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(json.len());
    write_canonical_text(&mut out, json)?;
    // Only valid UTF-8 was written.
    Ok(String::from_utf8(out).unwrap_or_default())
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
        debug_assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "canonical keys need no escapes: {key}"
        );
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // What `write_str` writes for a key without escapes.
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_str(out, value);
        self
    }

    pub fn uint(&mut self, key: &'static str, value: u64) -> &mut Self {
        let out = self.key(key);
        write_u64(out, value);
        self
    }

    /// A value that is already canonical JSON text.
    pub fn raw(&mut self, key: &'static str, canonical: &[u8]) -> &mut Self {
        let out = self.key(key);
        out.extend_from_slice(canonical);
        self
    }

    /// An instant, as [`format_time`] writes it.
    pub fn time(&mut self, key: &'static str, at: &DateTime<Utc>) -> &mut Self {
        let out = self.key(key);
        // The text of a time needs no escapes.
        out.push(b'"');
        write_time(out, at);
        out.push(b'"');
        self
    }

    pub fn strings(&mut self, key: &'static str, values: &[impl AsRef<str>]) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, value.as_ref());
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
        .time("signed_at", signed_at)
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
    fn text_is_canonicalised_as_its_parsed_value_is() {
        // `canonical_text` parses without building a `Value`: the same bytes as
        // `canonical_value` of serde_json's own parse, for anything JSON can hold.
        let inputs = [
            r#"{ "b": 1, "a": {"z": [true, null, "x"], "y": 2.5} }"#,
            r#"{"n":[1,1.0,1.5e300,1e20,18446744073709551616,-12,0.30000000000000004,123456789012345678,-9223372036854775808,1e-7,-0.0,0e5]}"#,
            r#"{"s":"tab\there \u00e9 \ud83d\ude00 quote\" back\\ nl\n ctl\u0001 del\u007f","k\u0000ey":"\/"}"#,
            r#"{"dup":1,"a":2,"dup":3,"dup":{"x":1}}"#,
            r#"{"aa":1,"a":2,"b":3,"ab":4,"":5,"é":6,"z":7,"Z":8,"😀":9}"#,
            r#"{"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz":1,"$serde_json::private::RawValue":"[1]"}"#,
            r#"[[],{},[{}],"",0,-1,{"a":[{"c":1,"b":2}]}]"#,
            r#""just a string""#,
            "null",
            "  \n\t{\"spaced\" :\r\n [ 1 , 2 ] }  ",
        ];
        for input in inputs {
            let value: Value = serde_json::from_str(input).unwrap();
            assert_eq!(
                canonical_text(input).unwrap(),
                canonical_value(&value),
                "{input}"
            );
        }
        // Where serde_json's `Value` reads a first key of that name as a raw value (and
        // then fails on the rest of the object), as jsonb prints the object above (shorter
        // keys first), the canonical text is simply the object's.
        let stored = r#"{"$serde_json::private::RawValue": "[1]", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz": 1}"#;
        assert!(serde_json::from_str::<Value>(stored).is_err());
        assert_eq!(
            canonical_text(stored).unwrap(),
            canonical_text(inputs[5]).unwrap()
        );
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1}x",
            "\"\\ud800\"",
            "1e400",
        ] {
            assert!(canonical_text(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii: String = (0u8..128).map(char::from).collect();
        every_ascii.push_str("é😀\u{2028}");
        let mut texts: Vec<String> = every_ascii.chars().map(String::from).collect();
        texts.extend([String::new(), every_ascii.clone(), "plain text".into()]);
        for text in texts {
            let mut out = Vec::new();
            write_str(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let instants = [
            DateTime::from_timestamp(0, 0),
            DateTime::from_timestamp(1_700_000_000, 1_000),
            DateTime::from_timestamp(1_700_000_000, 999_999_999),
            DateTime::from_timestamp(951_782_400, 123_456_000),
            // Years 0, 9999, 10000 and before 0.
            DateTime::from_timestamp(-62_167_219_200, 0),
            DateTime::from_timestamp(253_402_300_799, 999_999_000),
            DateTime::from_timestamp(253_402_300_800, 0),
            DateTime::from_timestamp(-62_167_219_201, 5_000),
            // A leap second.
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000),
        ];
        for at in instants.into_iter().map(Option::unwrap) {
            assert_eq!(
                format_time(&at),
                at.to_rfc3339_opts(SecondsFormat::Micros, true),
                "{at:?}"
            );
        }
        for seconds in (-100_000_000_000i64..300_000_000_000).step_by(7_777_777_777) {
            let at = DateTime::from_timestamp(seconds, 654_321_987).unwrap();
            assert_eq!(
                format_time(&at),
                at.to_rfc3339_opts(SecondsFormat::Micros, true)
            );
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
