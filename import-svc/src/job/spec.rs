//! What a job asks for, validated: the domain form of the wire `ImportJob`.
//!
//! Queue messages and `SubmitJob` both arrive here, so one set of rules decides what is a
//! valid job. Every error names the field, because the reason travels with the message to
//! the dead-letter queue and is all an operator has to go on.
//!
//! Every string is hostile until checked: a NUL or another control character, or a value
//! longer than its limit, is refused here by field name rather than reaching Postgres
//! (which cannot store a NUL and would answer with an error that looks like an outage).
//! Error messages echo values only escaped and shortened ([`printable`]), so a reason is
//! always safe to put in a header, a log line or a table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proto::import::v1 as pb;
use scope_catalog::{Resource, Scope};
use uuid::Uuid;

/// Full imports read everything (and find deletions); incremental ones read what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Incremental,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "full" => Some(Mode::Full),
            "incremental" => Some(Mode::Incremental),
            _ => None,
        }
    }

    pub fn to_wire(self) -> pb::ImportMode {
        match self {
            Mode::Full => pb::ImportMode::Full,
            Mode::Incremental => pb::ImportMode::Incremental,
        }
    }
}

/// A valid job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub job_id: Uuid,
    pub connection_id: String,
    /// In the order asked, without duplicates.
    pub resources: Vec<Resource>,
    pub mode: Mode,
    /// Overrides the remembered high-water mark (incremental only).
    pub updated_since: Option<DateTime<Utc>>,
    pub filters: BTreeMap<String, String>,
    /// Extra fields per resource, beyond the ones the importer always asks for.
    pub extra_fields: BTreeMap<Resource, Vec<String>>,
    pub requested_by: String,
}

impl JobSpec {
    /// The scopes the connection's grant must cover.
    pub fn required_scopes(&self) -> Vec<Scope> {
        self.resources.iter().map(|r| r.required_scope()).collect()
    }

    pub fn to_wire(&self) -> pb::ImportJob {
        pb::ImportJob {
            job_id: self.job_id.to_string(),
            connection_id: self.connection_id.clone(),
            resources: self
                .resources
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            mode: self.mode.to_wire() as i32,
            updated_since: self.updated_since.map(timestamp),
            filters: self.filters.clone().into_iter().collect(),
            fields: self
                .extra_fields
                .iter()
                .map(|(resource, fields)| pb::ResourceFields {
                    resource: resource.as_str().to_owned(),
                    fields: fields.clone(),
                })
                .collect(),
            requested_by: self.requested_by.clone(),
        }
    }
}

/// Why a job was refused. `job_id` is kept when it could be read, so the refusal can be
/// stored against the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidJob {
    pub job_id: Option<Uuid>,
    pub field: String,
    pub problem: String,
}

impl InvalidJob {
    /// Field and problem are made [`printable`] here, whatever the caller passes, because
    /// both may quote the input.
    pub fn new(job_id: Option<Uuid>, field: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidJob {
            job_id,
            field: printable(&field.into(), MAX_FIELD_NAME_CHARS * 2),
            problem: printable(&problem.into(), MAX_PROBLEM_CHARS),
        }
    }
}

/// Longest job and connection ids, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest resource name (the real ones are far shorter).
pub const MAX_RESOURCE_CHARS: usize = 64;
pub const MAX_REQUESTED_BY_CHARS: usize = 256;
pub const MAX_FILTER_VALUE_CHARS: usize = 1024;
/// Longest filter name or Clio field name.
pub const MAX_FIELD_NAME_CHARS: usize = 128;
/// Longest free text (a cancel reason).
pub const MAX_FREE_TEXT_CHARS: usize = 1024;
/// Entries in `resources` (duplicates included; there are five resources).
pub const MAX_RESOURCES: usize = 16;
pub const MAX_FILTERS: usize = 16;
/// Entries in `fields`, and extra fields in one of them.
pub const MAX_FIELD_LISTS: usize = 16;
pub const MAX_FIELDS_PER_RESOURCE: usize = 100;
/// Longest problem description kept in an error (it may quote input).
const MAX_PROBLEM_CHARS: usize = 1024;
/// How much of a refused value an error message quotes.
const MAX_QUOTED_CHARS: usize = 64;

/// Checks a one-line value a caller controls: no NUL, no other control character
/// (tabs and newlines included), at most `max_chars` characters. The error is the problem,
/// to be reported with the field's name.
pub fn check_text(value: &str, max_chars: usize) -> Result<(), String> {
    check_chars(value, max_chars, |_| false)
}

/// Like [`check_text`] for free text, which may also hold tabs and line breaks.
pub fn check_free_text(value: &str, max_chars: usize) -> Result<(), String> {
    check_chars(value, max_chars, |c| matches!(c, '\t' | '\n' | '\r'))
}

fn check_chars(
    value: &str,
    max_chars: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), String> {
    if value.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    if let Some(c) = value.chars().find(|c| c.is_control() && !allowed(*c)) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            u32::from(c)
        ));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(format!(
            "is {chars} characters long; at most {max_chars} are allowed"
        ));
    }
    Ok(())
}

/// `text` safe to show anywhere: control characters escaped (`\0`, `\u{1b}`), cut to
/// `max_chars` characters (marked with `…`).
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 8));
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// A refused value as an error message quotes it: escaped, short, in quotes.
pub fn quoted(text: &str) -> String {
    let short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// Clio list filters a job may pass on. Clio silently ignores a misspelt filter and returns
/// everything, so anything else is refused here instead.
const FILTERS: &[&str] = &[
    "matter_id",
    "client_id",
    "status",
    "calendar_id",
    "from",
    "to",
    "query",
    "created_since",
];

/// Validates a wire job. `assign_id` lets `SubmitJob` accept an empty id; queue messages
/// must carry one (it is their idempotency key).
pub fn validate(wire: pb::ImportJob, assign_id: bool) -> Result<JobSpec, InvalidJob> {
    let job_id_text = wire.job_id.trim();
    check_text(job_id_text, MAX_ID_CHARS)
        .map_err(|problem| InvalidJob::new(None, "job_id", problem))?;
    let job_id = match job_id_text {
        "" if assign_id => Uuid::now_v7(),
        "" => return Err(InvalidJob::new(None, "job_id", "must not be empty")),
        text => Uuid::parse_str(text).map_err(|_| {
            InvalidJob::new(None, "job_id", format!("{} is not a UUID", quoted(text)))
        })?,
    };
    let invalid = |field: &str, problem: String| InvalidJob::new(Some(job_id), field, problem);
    let text = |field: &str, value: &str, max_chars: usize| {
        check_text(value, max_chars).map_err(|problem| invalid(field, problem))
    };

    let connection_id = wire.connection_id.trim().to_owned();
    text("connection_id", &connection_id, MAX_ID_CHARS)?;
    if connection_id.is_empty() {
        return Err(invalid("connection_id", "must not be empty".into()));
    }

    let requested_by = wire.requested_by.trim().to_owned();
    text("requested_by", &requested_by, MAX_REQUESTED_BY_CHARS)?;

    if wire.resources.is_empty() {
        return Err(invalid(
            "resources",
            "must name at least one resource".into(),
        ));
    }
    if wire.resources.len() > MAX_RESOURCES {
        return Err(invalid(
            "resources",
            format!(
                "names {} resources; at most {MAX_RESOURCES} are allowed",
                wire.resources.len()
            ),
        ));
    }
    let mut resources = Vec::new();
    for (i, name) in wire.resources.iter().enumerate() {
        let field = format!("resources[{i}]");
        text(&field, name, MAX_RESOURCE_CHARS)?;
        let resource: Resource = name.parse().map_err(|e| invalid(&field, format!("{e}")))?;
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }

    let mode = match pb::ImportMode::try_from(wire.mode) {
        Ok(pb::ImportMode::Full | pb::ImportMode::Unspecified) => Mode::Full,
        Ok(pb::ImportMode::Incremental) => Mode::Incremental,
        Err(_) => return Err(invalid("mode", format!("unknown mode {}", wire.mode))),
    };

    let updated_since = match wire.updated_since {
        None => None,
        Some(_) if mode == Mode::Full => {
            return Err(invalid(
                "updated_since",
                "only incremental jobs take updated_since".into(),
            ));
        }
        Some(ts) => Some(
            DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
                .ok_or_else(|| invalid("updated_since", "out of range".into()))?,
        ),
    };

    if wire.filters.len() > MAX_FILTERS {
        return Err(invalid(
            "filters",
            format!(
                "has {} entries; at most {MAX_FILTERS} are allowed",
                wire.filters.len()
            ),
        ));
    }
    let mut filters = BTreeMap::new();
    for (key, value) in wire.filters {
        // The name becomes part of the field path only once it is known to be harmless.
        if let Err(problem) = check_text(&key, MAX_FIELD_NAME_CHARS) {
            return Err(invalid("filters", format!("a filter name {problem}")));
        }
        if !FILTERS.contains(&key.as_str()) {
            return Err(invalid(
                &format!("filters.{key}"),
                format!("unknown filter; expected one of {}", FILTERS.join(", ")),
            ));
        }
        text(&format!("filters.{key}"), &value, MAX_FILTER_VALUE_CHARS)?;
        if value.trim().is_empty() {
            return Err(invalid(
                &format!("filters.{key}"),
                "must not be empty".into(),
            ));
        }
        filters.insert(key, value);
    }

    if wire.fields.len() > MAX_FIELD_LISTS {
        return Err(invalid(
            "fields",
            format!(
                "has {} entries; at most {MAX_FIELD_LISTS} are allowed",
                wire.fields.len()
            ),
        ));
    }
    let mut extra_fields = BTreeMap::new();
    for (i, entry) in wire.fields.into_iter().enumerate() {
        let field = format!("fields[{i}].resource");
        text(&field, &entry.resource, MAX_RESOURCE_CHARS)?;
        let resource: Resource = entry
            .resource
            .parse()
            .map_err(|e| invalid(&field, format!("{e}")))?;
        if !resources.contains(&resource) {
            return Err(invalid(
                &field,
                format!("{resource} is not one of the job's resources"),
            ));
        }
        if entry.fields.len() > MAX_FIELDS_PER_RESOURCE {
            return Err(invalid(
                &format!("fields[{i}].fields"),
                format!(
                    "lists {} fields; at most {MAX_FIELDS_PER_RESOURCE} are allowed",
                    entry.fields.len()
                ),
            ));
        }
        for (j, name) in entry.fields.iter().enumerate() {
            let field = format!("fields[{i}].fields[{j}]");
            text(&field, name, MAX_FIELD_NAME_CHARS)?;
            if !crate::clio::fields::is_valid_field(name) {
                return Err(invalid(
                    &field,
                    format!(
                        "{} is not a Clio field name (letters, digits, _ and one level of {{...}})",
                        quoted(name)
                    ),
                ));
            }
        }
        extra_fields.insert(resource, entry.fields);
    }

    Ok(JobSpec {
        job_id,
        connection_id,
        resources,
        mode,
        updated_since,
        filters,
        extra_fields,
        requested_by,
    })
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> pb::ImportJob {
        pb::ImportJob {
            job_id: "0193a0c4-6d1e-7cc0-8000-000000000001".into(),
            connection_id: "conn-1".into(),
            resources: vec!["contacts".into(), "matters".into(), "contacts".into()],
            mode: pb::ImportMode::Full as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_job_is_normalised() {
        let spec = validate(wire(), false).unwrap();
        assert_eq!(spec.resources, vec![Resource::Contacts, Resource::Matters]);
        assert_eq!(spec.mode, Mode::Full);
        assert_eq!(spec.required_scopes().len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let mut job = wire();
        job.resources = vec!["contacts".into(), "invoices".into()];
        let err = validate(job, false).unwrap_err();
        assert_eq!(err.field, "resources[1]");
        assert!(err.job_id.is_some());

        let mut job = wire();
        job.job_id = String::new();
        assert_eq!(validate(job, false).unwrap_err().field, "job_id");

        let mut job = wire();
        job.filters.insert("matter".into(), "1".into());
        assert_eq!(validate(job, false).unwrap_err().field, "filters.matter");

        let mut job = wire();
        job.updated_since = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(validate(job, false).unwrap_err().field, "updated_since");

        let mut job = wire();
        job.fields = vec![pb::ResourceFields {
            resource: "contacts".into(),
            fields: vec!["a{b{c}}".into()],
        }];
        assert_eq!(
            validate(job, false).unwrap_err().field,
            "fields[0].fields[0]"
        );
    }

    /// Every way to set one string of a job to `value`, with the field the error must name.
    fn every_string(value: &str) -> Vec<(pb::ImportJob, &'static str)> {
        let v = value.to_owned();
        let fields = |resource: String, names: Vec<String>| {
            vec![pb::ResourceFields {
                resource,
                fields: names,
            }]
        };
        vec![
            (
                pb::ImportJob {
                    job_id: v.clone(),
                    ..wire()
                },
                "job_id",
            ),
            (
                pb::ImportJob {
                    connection_id: v.clone(),
                    ..wire()
                },
                "connection_id",
            ),
            (
                pb::ImportJob {
                    requested_by: v.clone(),
                    ..wire()
                },
                "requested_by",
            ),
            (
                pb::ImportJob {
                    resources: vec!["contacts".into(), v.clone()],
                    ..wire()
                },
                "resources[1]",
            ),
            (
                pb::ImportJob {
                    filters: [("status".to_owned(), v.clone())].into(),
                    ..wire()
                },
                "filters.status",
            ),
            (
                pb::ImportJob {
                    filters: [(v.clone(), "1".to_owned())].into(),
                    ..wire()
                },
                "filters",
            ),
            (
                pb::ImportJob {
                    fields: fields(v.clone(), vec![]),
                    ..wire()
                },
                "fields[0].resource",
            ),
            (
                pb::ImportJob {
                    fields: fields("contacts".into(), vec!["name".into(), v.clone()]),
                    ..wire()
                },
                "fields[0].fields[1]",
            ),
        ]
    }

    fn assert_refused(job: pb::ImportJob, field: &str, problem: &str) {
        let err = validate(job, true).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.problem.contains(problem), "{field}: {err}");
        let reason = err.to_string();
        assert!(
            !reason.contains('\0') && reason.chars().count() < 1_400,
            "{reason:?}"
        );
    }

    #[test]
    fn a_nul_in_any_string_is_refused_naming_the_field() {
        for (job, field) in every_string("contacts\0x") {
            assert_refused(job, field, "NUL");
        }
    }

    #[test]
    fn control_characters_in_any_string_are_refused_naming_the_field() {
        for control in ["a\u{1b}[31mb", "a\nb", "a\tb", "a\u{7f}", "a\u{85}b"] {
            for (job, field) in every_string(control) {
                assert_refused(job, field, "control characters");
            }
        }
    }

    #[test]
    fn ten_kilobyte_values_are_refused_naming_the_field() {
        for (job, field) in every_string(&"a".repeat(10 * 1024)) {
            assert_refused(job, field, "at most");
        }
    }

    #[test]
    fn limits_are_inclusive_and_count_characters_not_bytes() {
        let mut job = wire();
        job.requested_by = "é".repeat(MAX_REQUESTED_BY_CHARS);
        job.connection_id = "c".repeat(MAX_ID_CHARS);
        job.filters
            .insert("query".into(), "q".repeat(MAX_FILTER_VALUE_CHARS));
        assert!(validate(job, false).is_ok());
    }

    #[test]
    fn a_job_id_must_be_a_uuid_and_the_error_quotes_it_shortly() {
        let mut job = wire();
        job.job_id = "not-a-uuid".into();
        let err = validate(job, false).unwrap_err();
        assert_eq!(err.to_string(), "job_id: \"not-a-uuid\" is not a UUID");
        assert_eq!(err.job_id, None);

        let mut job = wire();
        job.job_id = "x".repeat(MAX_ID_CHARS);
        let err = validate(job, false).unwrap_err();
        assert!(err.problem.ends_with("\"… is not a UUID"), "{err}");
        assert!(err.problem.len() < 100, "{err}");
    }

    #[test]
    fn counts_of_resources_filters_and_fields_are_bounded() {
        let mut job = wire();
        job.resources = vec!["contacts".into(); MAX_RESOURCES + 1];
        assert_eq!(validate(job, false).unwrap_err().field, "resources");

        let mut job = wire();
        job.filters = (0..=MAX_FILTERS)
            .map(|i| (format!("f{i}"), "1".to_owned()))
            .collect();
        assert_eq!(validate(job, false).unwrap_err().field, "filters");

        let mut job = wire();
        job.fields = vec![
            pb::ResourceFields {
                resource: "contacts".into(),
                fields: vec![]
            };
            MAX_FIELD_LISTS + 1
        ];
        assert_eq!(validate(job, false).unwrap_err().field, "fields");

        let mut job = wire();
        job.fields = vec![pb::ResourceFields {
            resource: "contacts".into(),
            fields: vec!["name".into(); MAX_FIELDS_PER_RESOURCE + 1],
        }];
        assert_eq!(validate(job, false).unwrap_err().field, "fields[0].fields");
    }

    #[test]
    fn printable_escapes_control_characters_and_shortens() {
        assert_eq!(printable("a\0b\u{1b}c", 10), "a\\0b\\u{1b}c");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("née", 3), "née");
        assert_eq!(quoted("a\0"), "\"a\\0\"");
        let long = quoted(&"x".repeat(10_000));
        assert!(long.len() < 80 && long.ends_with('…'), "{long}");
        check_free_text("line one\nline two\tend", 100).unwrap();
        assert!(check_free_text("a\0", 100).is_err());
    }

    #[test]
    fn submit_may_leave_the_id_to_the_service() {
        let mut job = wire();
        job.job_id = String::new();
        assert!(validate(job, true).is_ok());
    }
}
