//! Decoding a queue message body: protobuf `ImportJob`, or the same message in protobuf's
//! canonical JSON mapping ([`proto::json`]).
//!
//! Decoding only checks the shape; what the strings hold is checked by
//! [`super::spec::validate`]. A decode error may quote the body (it names an unknown key),
//! so it goes through [`InvalidJob::new`], which escapes and shortens it. Invalid
//! UTF-8 in a protobuf string is a decode error naming the field (prost reports
//! `ImportJob.requested_by: invalid string value`).

use proto::imports::v1 as pb;
use proto::queue::content_type::{JSON, PROTOBUF, PROTOBUF_ALIASES};

use super::spec::InvalidJob;

/// Decodes by content type; without one, a body starting with `{` is JSON.
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<pb::ImportJob, InvalidJob> {
    let is_json = match content_type.map(|c| c.split(';').next().unwrap_or("").trim()) {
        Some(JSON) => true,
        Some(protobuf) if protobuf == PROTOBUF || PROTOBUF_ALIASES.contains(&protobuf) => false,
        Some(other) if !other.is_empty() => {
            return Err(InvalidJob::new(
                None,
                "content_type",
                format!("{other:?} is not supported; use {PROTOBUF} or {JSON}"),
            ));
        }
        _ => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    if is_json {
        decode_json(body)
    } else {
        decode_protobuf(body)
    }
}

fn decode_protobuf(body: &[u8]) -> Result<pb::ImportJob, InvalidJob> {
    prost::Message::decode(body)
        .map_err(|e| InvalidJob::new(None, "body", format!("not a protobuf ImportJob: {e}")))
}

/// The JSON form: protobuf's canonical JSON mapping, read from the contract's descriptors
/// (either field-name spelling, enum values by name or number, `updated_since` as RFC 3339).
/// Unknown keys are refused so a misspelt field is not silently dropped.
fn decode_json(body: &[u8]) -> Result<pb::ImportJob, InvalidJob> {
    proto::json::decode_import_job(body).map_err(|e| match e.field {
        Some(field) => InvalidJob::new(None, field, e.problem),
        None => InvalidJob::new(None, "body", format!("not a JSON ImportJob: {}", e.problem)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_decode_to_the_same_job() {
        let json = br#"{"job_id":"0193a0c4-6d1e-7cc0-8000-000000000001","connection_id":"c",
            "resources":["contacts"],"mode":"IMPORT_MODE_INCREMENTAL",
            "updated_since":"2026-01-02T03:04:05Z"}"#;
        let from_json = decode(json, Some("application/json")).unwrap();
        let bytes = prost::Message::encode_to_vec(&from_json);
        let from_proto = decode(&bytes, Some(PROTOBUF)).unwrap();
        assert_eq!(from_json, from_proto);
        assert_eq!(from_json.mode, pb::ImportMode::Incremental as i32);
        assert_eq!(from_json.updated_since.unwrap().seconds, 1_767_323_045);
        // Sniffed without a content type, and with a charset parameter.
        assert_eq!(decode(json, None).unwrap(), from_json);
        assert_eq!(
            decode(json, Some("application/json; charset=utf-8")).unwrap(),
            from_json
        );

        // What protobuf-JSON printers write: lowerCamelCase names, the enum by number too.
        let camel = br#"{"jobId":"0193a0c4-6d1e-7cc0-8000-000000000001","connectionId":"c",
            "resources":["contacts"],"mode":2,"updatedSince":"2026-01-02T03:04:05Z"}"#;
        assert_eq!(decode(camel, Some(JSON)).unwrap(), from_json);
    }

    #[test]
    fn a_bad_json_value_names_its_field() {
        let err = decode(br#"{"mode":"full"}"#, Some(JSON)).unwrap_err();
        assert_eq!(err.field, "mode");
        assert!(err.problem.contains("IMPORT_MODE_FULL"), "{err}");
        let err = decode(br#"{"updatedSince":"yesterday"}"#, Some(JSON)).unwrap_err();
        assert_eq!(err.field, "updatedSince");
        let err = decode(br#"{"updated_since":"2026-01-02"}"#, Some(JSON)).unwrap_err();
        assert_eq!(err.field, "updated_since");
        let err = decode(br#"{"fields":[{"resource":"contacts","extra":[]}]}"#, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "body: not a JSON ImportJob: unknown field `fields[0].extra`"
        );
    }

    #[test]
    fn hostile_bodies_are_refused_with_a_printable_reason() {
        // A NUL and an escape sequence in an unknown key, quoted back in the reason.
        let err = decode(
            b"{\"job_id\":\"x\",\"evil\\u0000\\u001b[2J\":1}",
            Some(JSON),
        )
        .unwrap_err();
        let reason = err.to_string();
        assert!(reason.contains("unknown field"), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");

        // Invalid UTF-8 in a protobuf string field: a decode error that names the field.
        let mut body = prost::Message::encode_to_vec(&pb::ImportJob {
            job_id: "0193a0c4-6d1e-7cc0-8000-000000000001".into(),
            requested_by: "ab".into(),
            ..Default::default()
        });
        let at = body.len() - 2;
        body[at] = 0xff;
        let err = decode(&body, Some(PROTOBUF)).unwrap_err();
        assert_eq!(err.field, "body");
        assert!(err.problem.contains("requested_by"), "{err}");
        assert!(err.problem.contains("UTF-8"), "{err}");

        // A huge unknown key is cut short.
        let key = "k".repeat(100_000);
        let err = decode(format!("{{\"{key}\":1}}").as_bytes(), None).unwrap_err();
        assert!(err.to_string().len() < 2_000);
    }

    #[test]
    fn malformed_bodies_say_why() {
        let err = decode(b"{not json", Some("application/json")).unwrap_err();
        assert_eq!(err.field, "body");
        let err = decode(br#"{"resourcez":["contacts"]}"#, None).unwrap_err();
        assert!(err.problem.contains("resourcez"), "{err}");
        let err = decode(&[0xff, 0xff, 0xff], Some(PROTOBUF)).unwrap_err();
        assert_eq!(err.field, "body");
        let err = decode(b"x", Some("text/plain")).unwrap_err();
        assert_eq!(err.field, "content_type");
    }
}
