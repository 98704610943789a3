//! Protobuf's canonical JSON mapping of the contracts, read from their descriptors
//! ([`crate::FILE_DESCRIPTOR_SET`]), so a JSON body means here what it means to every
//! protobuf-JSON library: field names in lowerCamelCase (what printers write) or as the
//! `.proto` spells them, enum values by name or number, a `Timestamp` as an RFC 3339
//! string, 64-bit integers as numbers or strings.
//!
//! An unknown field is refused (the mapping's default; some parsers offer to ignore them),
//! naming it, so a misspelt field is never silently dropped.

use std::fmt;
use std::sync::LazyLock;

use prost_reflect::{DescriptorError, DescriptorPool, DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

/// Full protobuf name of the queue's job message.
pub const IMPORT_JOB: &str = "clio_connect.imports.v1.ImportJob";

/// Every contract's descriptors, decoded once.
static POOL: LazyLock<Result<DescriptorPool, DescriptorError>> =
    LazyLock::new(|| DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET));

/// Why a JSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The refused field's path as the body spells it (`updatedSince`, `fields[0].resource`),
    /// or `None` when the body as a whole is wrong (not JSON, or holding an unknown field,
    /// which `problem` names).
    pub field: Option<String>,
    pub problem: String,
}

impl JsonError {
    fn body(problem: impl Into<String>) -> Self {
        JsonError {
            field: None,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for JsonError {}

/// Decodes an `ImportJob` (the queue's JSON job body).
pub fn decode_import_job(body: &[u8]) -> Result<crate::imports::v1::ImportJob, JsonError> {
    decode(IMPORT_JOB, body)
}

/// Decodes `body` as the message named `message` (its full protobuf name) in protobuf's
/// canonical JSON mapping, into the generated type `M`.
pub fn decode<M: prost::Message + Default>(message: &str, body: &[u8]) -> Result<M, JsonError> {
    let pool = POOL
        .as_ref()
        .map_err(|e| JsonError::body(format!("the contracts' descriptors do not decode: {e}")))?;
    let descriptor = pool
        .get_message_by_name(message)
        .ok_or_else(|| JsonError::body(format!("no message {message} in the contracts")))?;
    let value: Value = serde_json::from_slice(body).map_err(|e| JsonError::body(e.to_string()))?;
    if let Some(refused) = first_unknown(&descriptor, &value, "") {
        return Err(refused);
    }
    let mut track = serde_path_to_error::Track::new();
    let decoded = DynamicMessage::deserialize(
        descriptor,
        serde_path_to_error::Deserializer::new(&value, &mut track),
    );
    let dynamic = match decoded {
        Ok(dynamic) => dynamic,
        Err(e) => {
            let path = track.path();
            let field = path.iter().next().is_some().then(|| path.to_string());
            return Err(JsonError {
                field,
                problem: e.to_string(),
            });
        }
    };
    dynamic
        .transcode_to::<M>()
        .map_err(|e| JsonError::body(e.to_string()))
}

/// The first key of `value` naming no field of `message` (in either spelling), or enum
/// name no value has, at any depth, refused with its path. A value of the wrong JSON type
/// is left for the decoder to refuse.
fn first_unknown(message: &MessageDescriptor, value: &Value, path: &str) -> Option<JsonError> {
    // Well-known types (Timestamp, Struct, Any, ...) have JSON forms of their own.
    if message.package_name() == "google.protobuf" {
        return None;
    }
    let Value::Object(object) = value else {
        return None;
    };
    for (key, item) in object {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = message
            .get_field_by_json_name(key)
            .or_else(|| message.get_field_by_name(key))
        else {
            return Some(JsonError::body(format!("unknown field `{here}`")));
        };
        let kind = if field.is_map() {
            match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            }
        } else {
            field.kind()
        };
        // One value, the items of a list, or the values of a map.
        let items: Vec<(String, &Value)> = match item {
            Value::Array(list) if field.is_list() => list
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{here}[{i}]"), v))
                .collect(),
            Value::Object(map) if field.is_map() => map
                .iter()
                .map(|(k, v)| (format!("{here}.{k}"), v))
                .collect(),
            one => vec![(here, one)],
        };
        for (at, item) in items {
            let refused = match (&kind, item) {
                (Kind::Message(inner), item) => first_unknown(inner, item, &at),
                (Kind::Enum(values), Value::String(name))
                    if values.get_value_by_name(name).is_none() =>
                {
                    let names: Vec<String> = values.values().map(|v| v.name().to_owned()).collect();
                    Some(JsonError {
                        field: Some(at),
                        problem: format!(
                            "{name:?} is not a value of {}: expected one of {} or a number",
                            values.name(),
                            names.join(", ")
                        ),
                    })
                }
                _ => None,
            };
            if refused.is_some() {
                return refused;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imports::v1::{ImportJob, ImportMode, ResourceFields};

    const JOB_ID: &str = "0193a0c4-6d1e-7cc0-8000-000000000001";

    fn expected() -> ImportJob {
        ImportJob {
            job_id: JOB_ID.into(),
            connection_id: "c-1".into(),
            resources: vec!["contacts".into(), "matters".into()],
            mode: ImportMode::Incremental as i32,
            updated_since: Some(prost_types::Timestamp {
                seconds: 1_767_323_045,
                nanos: 500_000_000,
            }),
            filters: [("status".to_owned(), "open".to_owned())].into(),
            fields: vec![ResourceFields {
                resource: "contacts".into(),
                fields: vec!["title".into()],
            }],
            requested_by: "ann@firm.example".into(),
            priority: 0,
        }
    }

    #[test]
    fn the_descriptor_pool_decodes_and_holds_the_job() {
        let pool = POOL.as_ref().unwrap();
        assert!(pool.get_message_by_name(IMPORT_JOB).is_some());
    }

    #[test]
    fn camel_case_as_protobuf_json_printers_write_it() {
        let body = format!(
            r#"{{"jobId":"{JOB_ID}","connectionId":"c-1","resources":["contacts","matters"],
            "mode":"IMPORT_MODE_INCREMENTAL","updatedSince":"2026-01-02T03:04:05.5Z",
            "filters":{{"status":"open"}},"fields":[{{"resource":"contacts","fields":["title"]}}],
            "requestedBy":"ann@firm.example"}}"#
        );
        assert_eq!(decode_import_job(body.as_bytes()).unwrap(), expected());
    }

    #[test]
    fn snake_case_as_the_proto_spells_it_with_an_enum_number_and_an_offset() {
        let body = format!(
            r#"{{"job_id":"{JOB_ID}","connection_id":"c-1","resources":["contacts","matters"],
            "mode":2,"updated_since":"2026-01-02T04:04:05.5+01:00",
            "filters":{{"status":"open"}},"fields":[{{"resource":"contacts","fields":["title"]}}],
            "requested_by":"ann@firm.example"}}"#
        );
        assert_eq!(decode_import_job(body.as_bytes()).unwrap(), expected());
    }

    #[test]
    fn absent_and_null_fields_are_defaults() {
        let job = decode_import_job(br#"{"jobId":"x","updatedSince":null,"mode":null}"#).unwrap();
        assert_eq!(
            job,
            ImportJob {
                job_id: "x".into(),
                ..Default::default()
            }
        );
        assert_eq!(decode_import_job(b"{}").unwrap(), ImportJob::default());
    }

    #[test]
    fn unknown_fields_are_refused_by_their_path() {
        let err = decode_import_job(br#"{"jobId":"x","resourcez":["contacts"]}"#).unwrap_err();
        assert_eq!(err.field, None);
        assert_eq!(err.problem, "unknown field `resourcez`");

        let err = decode_import_job(br#"{"fields":[{"resource":"contacts"},{"resources":"x"}]}"#)
            .unwrap_err();
        assert_eq!(err.problem, "unknown field `fields[1].resources`");
    }

    #[test]
    fn a_bad_value_names_its_field() {
        let err = decode_import_job(br#"{"mode":"full"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("mode"));
        assert!(err.problem.contains("IMPORT_MODE_FULL"), "{err}");

        let err = decode_import_job(br#"{"updatedSince":"yesterday"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("updatedSince"), "{err}");

        let err = decode_import_job(br#"{"resources":["contacts",7]}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("resources[1]"), "{err}");

        let err = decode_import_job(br#"{"fields":[{"resource":["contacts"]}]}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("fields[0].resource"), "{err}");

        let err = decode_import_job(b"{\"jobId\": ").unwrap_err();
        assert_eq!(err.field, None);
        let err = decode_import_job(b"[]").unwrap_err();
        assert_eq!(err.field, None, "{err}");
    }
}
