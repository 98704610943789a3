//! Fitting an event to audit-svc's limits (`proto::audit_limits`) before it is stored, so
//! no event built from what a caller sent (a 10 KB method path, a principal with a NUL, a
//! 5 KiB cancel reason) can be refused later and hold up every event behind it.
//!
//! - An identifier (tenant, actor and subject ids, refs, source) that is too long, blank
//!   where required, or holds a control character becomes `<prefix>…sha256:<hex>`: the
//!   printable start of the original (at most [`KEPT_PREFIX_BYTES`]) and the SHA-256 of
//!   all of it, so the same value always gives the same identifier and can be matched.
//! - The reason has NUL and other control characters (but newline and tab) replaced by
//!   U+FFFD, and beyond the limit is cut with a marker naming the original length and
//!   digest.
//! - A payload that is not a JSON object audit-svc can store (too large, not JSON, deeper
//!   than serde_json parses, not an object) is replaced by its length and digest; NULs in
//!   its strings become U+FFFD.
//!
//! Every changed field is listed in the payload under [`FITTED_KEY`] with its original
//! length in bytes (`{"fitted_to_limits":{"subject.id":10240}}`).

use std::collections::BTreeMap;

use proto::audit_limits::{
    MAX_ID_BYTES, MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES, required_id_problem, text_problem,
};
use proto::common::v1::AuditEvent;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The payload key listing the fields changed to fit, with their original byte lengths.
pub const FITTED_KEY: &str = "fitted_to_limits";
/// How much of an over-long identifier's printable start is kept before its digest.
pub const KEPT_PREFIX_BYTES: usize = 128;

/// `sha256:<64 hex digits>` of `value`.
pub fn digest(value: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes())))
}

/// The longest start of `value` of at most `max` bytes, ending on a character boundary.
fn prefix(value: &str, max: usize) -> &str {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// An identifier audit-svc stores as it is: bounded, no NUL, no control character, and
/// not blank when `required`.
fn id_fits(value: &str, required: bool) -> bool {
    let problem = if required {
        required_id_problem(value)
    } else {
        text_problem(value, MAX_ID_BYTES)
    };
    problem.is_none() && !has_control(value)
}

/// The stand-in for an identifier that does not fit: `<printable prefix>…sha256:<hex>`.
pub fn digest_id(value: &str) -> String {
    let printable = value.find(char::is_control).unwrap_or(value.len());
    let kept = prefix(&value[..printable], KEPT_PREFIX_BYTES).trim();
    if kept.is_empty() {
        digest(value)
    } else {
        format!("{kept}…{}", digest(value))
    }
}

/// Free text with NUL and control characters (but newline and tab) replaced, cut to
/// `max` bytes with a marker when longer.
pub fn fit_text(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    if cleaned.len() <= max {
        return cleaned;
    }
    let marker = format!("… [truncated: {} bytes, {}]", value.len(), digest(value));
    let kept = prefix(&cleaned, max.saturating_sub(marker.len()));
    format!("{kept}{marker}")
}

/// Replaces every NUL (which `jsonb` cannot store) in the strings and keys of `value`;
/// returns whether there was one.
fn replace_nuls(value: &mut Value) -> bool {
    match value {
        Value::String(text) if text.contains('\0') => {
            *text = text.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(items) => {
            // Every item, not only up to the first with a NUL.
            let mut any = false;
            for item in items {
                any |= replace_nuls(item);
            }
            any
        }
        Value::Object(map) => {
            let mut any = false;
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                any |= replace_nuls(&mut item);
                let key = if key.contains('\0') {
                    any = true;
                    key.replace('\0', "\u{FFFD}")
                } else {
                    key
                };
                map.insert(key, item);
            }
            any
        }
        _ => false,
    }
}

/// The payload as an object audit-svc accepts, or `None` when it must be replaced.
fn payload_object(raw: &str) -> Option<(Map<String, Value>, bool)> {
    if raw.trim().is_empty() {
        return Some((Map::new(), false));
    }
    if raw.len() > MAX_PAYLOAD_BYTES {
        return None;
    }
    let mut value: Value = serde_json::from_str(raw).ok()?;
    let had_nul = replace_nuls(&mut value);
    match value {
        Value::Object(map) => Some((map, had_nul)),
        _ => None,
    }
}

/// Fits `event` to audit-svc's limits in place (see the module docs) and returns the
/// fields it changed. An event that already fits is left byte for byte as it was.
pub fn fit_to_limits(event: &mut AuditEvent) -> Vec<&'static str> {
    let mut fitted: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut id = |name: &'static str, value: &mut String, required: bool| {
        if !id_fits(value, required) {
            fitted.insert(name, value.len());
            *value = digest_id(value);
        }
    };
    id("tenant", &mut event.tenant, true);
    if let Some(actor) = event.actor.as_mut() {
        id("actor.id", &mut actor.id, true);
    }
    if let Some(subject) = event.subject.as_mut() {
        id("subject.id", &mut subject.id, true);
    }
    if let Some(refs) = event.refs.as_mut() {
        id("refs.connection_id", &mut refs.connection_id, false);
        id("refs.app_id", &mut refs.app_id, false);
        id("refs.principal", &mut refs.principal, false);
        id("refs.clio_user_id", &mut refs.clio_user_id, false);
        id("refs.clio_account_id", &mut refs.clio_account_id, false);
        id("refs.job_id", &mut refs.job_id, false);
    }
    id("source", &mut event.source, false);
    let reason = fit_text(&event.reason, MAX_TEXT_BYTES);
    if reason != event.reason {
        fitted.insert("reason", event.reason.len());
        event.reason = reason;
    }

    let (mut payload, payload_changed) = match payload_object(&event.payload_json) {
        Some((map, had_nul)) => {
            if had_nul {
                fitted.insert("payload_json", event.payload_json.len());
            }
            (map, had_nul)
        }
        None => {
            fitted.insert("payload_json", event.payload_json.len());
            (replaced_payload(&event.payload_json), true)
        }
    };
    if fitted.is_empty() {
        if payload_changed {
            event.payload_json = Value::Object(payload).to_string();
        }
        return Vec::new();
    }
    let lengths: Map<String, Value> = fitted
        .iter()
        .map(|(field, length)| ((*field).to_owned(), Value::from(*length)))
        .collect();
    payload.insert(FITTED_KEY.to_owned(), Value::Object(lengths.clone()));
    let mut text = Value::Object(payload).to_string();
    if text.len() > MAX_PAYLOAD_BYTES {
        // The listing pushed a payload near the limit over it: keep its digest instead.
        let mut replaced = replaced_payload(&event.payload_json);
        let mut lengths = lengths;
        lengths.insert("payload_json".into(), Value::from(event.payload_json.len()));
        replaced.insert(FITTED_KEY.to_owned(), Value::Object(lengths));
        fitted.insert("payload_json", event.payload_json.len());
        text = Value::Object(replaced).to_string();
    }
    event.payload_json = text;
    fitted.into_keys().collect()
}

/// What stands in for a payload audit-svc could not store: its digest.
fn replaced_payload(raw: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("payload_sha256".into(), Value::from(digest(raw)));
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::common::v1::{Actor, EventRefs, Subject};

    fn event() -> AuditEvent {
        AuditEvent {
            tenant: "platform".into(),
            actor: Some(Actor {
                kind: 2,
                id: "unauthenticated".into(),
            }),
            subject: Some(Subject {
                kind: 7,
                id: "/clio_connect.auth.v1.AuthService/ListApps".into(),
            }),
            refs: Some(EventRefs::default()),
            reason: "missing credential".into(),
            payload_json: r#"{"code":"Unauthenticated"}"#.into(),
            source: "auth-svc".into(),
            ..AuditEvent::default()
        }
    }

    fn payload(event: &AuditEvent) -> Value {
        serde_json::from_str(&event.payload_json).unwrap()
    }

    #[test]
    fn an_event_that_fits_is_untouched() {
        let mut fitting = event();
        let before = fitting.clone();
        assert!(fit_to_limits(&mut fitting).is_empty());
        assert_eq!(fitting, before);
    }

    #[test]
    fn a_long_identifier_becomes_a_stable_prefixed_digest_and_its_length_is_kept() {
        let path = format!("/{}", "x".repeat(10_239));
        let mut long = event();
        long.subject.as_mut().unwrap().id = path.clone();
        assert_eq!(fit_to_limits(&mut long), vec!["subject.id"]);
        let id = &long.subject.as_ref().unwrap().id;
        assert!(id.len() <= MAX_ID_BYTES, "{}", id.len());
        assert!(id.starts_with(&path[..KEPT_PREFIX_BYTES]), "{id}");
        assert!(id.ends_with(&digest(&path)), "{id}");
        assert_eq!(payload(&long)[FITTED_KEY]["subject.id"], 10_240);
        assert_eq!(payload(&long)["code"], "Unauthenticated");
        // The same value always gives the same identifier.
        let mut again = event();
        again.subject.as_mut().unwrap().id = path;
        fit_to_limits(&mut again);
        assert_eq!(&again.subject.as_ref().unwrap().id, id);
    }

    #[test]
    fn control_characters_and_nul_in_identifiers_are_digested_too() {
        let mut hostile = event();
        hostile.refs.as_mut().unwrap().principal = "alice\0\nadmin".into();
        hostile.actor.as_mut().unwrap().id = "  ".into();
        let fitted = fit_to_limits(&mut hostile);
        assert_eq!(fitted, vec!["actor.id", "refs.principal"]);
        let principal = &hostile.refs.as_ref().unwrap().principal;
        assert!(principal.starts_with("alice…sha256:"), "{principal}");
        assert!(!has_control(principal));
        assert_eq!(
            hostile.actor.as_ref().unwrap().id,
            digest("  "),
            "a blank required id"
        );
    }

    #[test]
    fn a_long_reason_is_cut_with_a_marker_and_control_characters_replaced() {
        let mut long = event();
        long.reason = format!("a\0b\u{7}c\nd{}", "é".repeat(3_000));
        let original = long.reason.clone();
        assert_eq!(fit_to_limits(&mut long), vec!["reason"]);
        assert!(long.reason.len() <= MAX_TEXT_BYTES, "{}", long.reason.len());
        assert!(
            long.reason.starts_with("a\u{FFFD}b\u{FFFD}c\nd"),
            "{}",
            long.reason
        );
        assert!(
            long.reason.ends_with(&format!(
                "… [truncated: {} bytes, {}]",
                original.len(),
                digest(&original)
            )),
            "{}",
            long.reason
        );
        assert_eq!(payload(&long)[FITTED_KEY]["reason"], original.len());
    }

    #[test]
    fn payloads_audit_svc_cannot_store_are_replaced_by_their_digest() {
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PAYLOAD_BYTES));
        for raw in [deep.as_str(), big.as_str(), "[1]", "not json"] {
            let mut bad = event();
            bad.payload_json = raw.to_owned();
            assert_eq!(fit_to_limits(&mut bad), vec!["payload_json"], "{raw:.40}");
            let value = payload(&bad);
            assert_eq!(value["payload_sha256"], digest(raw));
            assert_eq!(value[FITTED_KEY]["payload_json"], raw.len());
        }
        let mut nul = event();
        nul.payload_json = r#"{"note":"a\u0000b","k\u0000":1}"#.into();
        assert_eq!(fit_to_limits(&mut nul), vec!["payload_json"]);
        let value = payload(&nul);
        assert_eq!(value["note"], "a\u{FFFD}b");
        assert_eq!(value["k\u{FFFD}"], 1);
    }

    #[test]
    fn a_payload_near_the_limit_stays_under_it_with_the_listing() {
        let mut near = event();
        near.subject.as_mut().unwrap().id = "s".repeat(1_000);
        near.payload_json = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PAYLOAD_BYTES - 10));
        fit_to_limits(&mut near);
        assert!(near.payload_json.len() <= MAX_PAYLOAD_BYTES);
        let value = payload(&near);
        assert_eq!(value[FITTED_KEY]["subject.id"], 1_000);
        assert!(value["payload_sha256"].is_string());
    }
}
