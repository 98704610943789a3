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

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use clio_api::fields::is_valid_field;
use clio_api::listing::FILTERS;
use proto::imports::v1 as pb;
use scope_catalog::{Resource, Scope};
use uuid::Uuid;

/// Text made safe to show anywhere: the same escaping Clio's own text gets.
pub use clio_api::printable;

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

/// Which waiting jobs start first (see the consumer's scheduler). Ordered: a smaller value
/// is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Interactive,
    Scheduled,
    Backfill,
}

impl Priority {
    pub const ALL: [Priority; 3] = [
        Priority::Interactive,
        Priority::Scheduled,
        Priority::Backfill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Scheduled => "scheduled",
            Priority::Backfill => "backfill",
        }
    }

    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }

    pub fn to_wire(self) -> pb::JobPriority {
        match self {
            Priority::Interactive => pb::JobPriority::Interactive,
            Priority::Scheduled => pb::JobPriority::Scheduled,
            Priority::Backfill => pb::JobPriority::Backfill,
        }
    }

    /// Unspecified is `Scheduled`; `None` for a number the enum does not have.
    pub fn from_wire(value: i32) -> Option<Priority> {
        match pb::JobPriority::try_from(value).ok()? {
            pb::JobPriority::Unspecified | pb::JobPriority::Scheduled => Some(Priority::Scheduled),
            pb::JobPriority::Interactive => Some(Priority::Interactive),
            pb::JobPriority::Backfill => Some(Priority::Backfill),
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
    pub priority: Priority,
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
            updated_since: self.updated_since.map(proto::time::timestamp),
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
            priority: self.priority.to_wire() as i32,
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

/// A refused value as an error message quotes it: escaped, short, in quotes.
pub fn quoted(text: &str) -> String {
    let short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// Validates a wire job. `assign_id` lets `SubmitJob` accept an empty id; queue messages
/// must carry one (it is their idempotency key).
pub fn validate(wire: pb::ImportJob, assign_id: bool) -> Result<JobSpec, InvalidJob> {
    let check = Check {
        job_id: job_id(&wire.job_id, assign_id)?,
    };
    let connection_id = wire.connection_id.trim().to_owned();
    check.text("connection_id", &connection_id, MAX_ID_CHARS)?;
    if connection_id.is_empty() {
        return Err(check.invalid("connection_id", "must not be empty".into()));
    }
    let requested_by = wire.requested_by.trim().to_owned();
    check.text("requested_by", &requested_by, MAX_REQUESTED_BY_CHARS)?;
    let resources = check.resources(&wire.resources)?;
    let mode = match pb::ImportMode::try_from(wire.mode) {
        Ok(pb::ImportMode::Full | pb::ImportMode::Unspecified) => Mode::Full,
        Ok(pb::ImportMode::Incremental) => Mode::Incremental,
        Err(_) => return Err(check.invalid("mode", format!("unknown mode {}", wire.mode))),
    };
    let priority = Priority::from_wire(wire.priority)
        .ok_or_else(|| check.invalid("priority", format!("unknown priority {}", wire.priority)))?;
    let updated_since = check.updated_since(wire.updated_since, mode)?;
    let filters = check.filters(wire.filters)?;
    let extra_fields = check.extra_fields(wire.fields, &resources)?;
    Ok(JobSpec {
        job_id: check.job_id,
        connection_id,
        resources,
        mode,
        updated_since,
        filters,
        extra_fields,
        requested_by,
        priority,
    })
}

/// The job id: a UUID, or a new one when `assign_id` and none was given.
fn job_id(text: &str, assign_id: bool) -> Result<Uuid, InvalidJob> {
    let text = text.trim();
    check_text(text, MAX_ID_CHARS).map_err(|problem| InvalidJob::new(None, "job_id", problem))?;
    match text {
        "" if assign_id => Ok(Uuid::now_v7()),
        "" => Err(InvalidJob::new(None, "job_id", "must not be empty")),
        text => Uuid::parse_str(text).map_err(|_| {
            InvalidJob::new(None, "job_id", format!("{} is not a UUID", quoted(text)))
        }),
    }
}

/// The checks of one job, whose errors carry its id.
struct Check {
    job_id: Uuid,
}

impl Check {
    fn invalid(&self, field: &str, problem: String) -> InvalidJob {
        InvalidJob::new(Some(self.job_id), field, problem)
    }

    fn text(&self, field: &str, value: &str, max_chars: usize) -> Result<(), InvalidJob> {
        check_text(value, max_chars).map_err(|problem| self.invalid(field, problem))
    }

    /// Refuses a list of more than `max` items, counted as `(verb, count, noun)`: "has 17
    /// entries; at most 16 are allowed".
    fn at_most(
        &self,
        field: &str,
        (verb, count, noun): (&str, usize, &str),
        max: usize,
    ) -> Result<(), InvalidJob> {
        if count > max {
            let problem = format!("{verb} {count} {noun}; at most {max} are allowed");
            return Err(self.invalid(field, problem));
        }
        Ok(())
    }

    /// The resources named, in order, without duplicates.
    fn resources(&self, names: &[String]) -> Result<Vec<Resource>, InvalidJob> {
        if names.is_empty() {
            return Err(self.invalid("resources", "must name at least one resource".into()));
        }
        self.at_most(
            "resources",
            ("names", names.len(), "resources"),
            MAX_RESOURCES,
        )?;
        let mut resources = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let field = format!("resources[{i}]");
            self.text(&field, name, MAX_RESOURCE_CHARS)?;
            let resource: Resource = name
                .parse()
                .map_err(|e| self.invalid(&field, format!("{e}")))?;
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        Ok(resources)
    }

    fn updated_since(
        &self,
        wire: Option<prost_types::Timestamp>,
        mode: Mode,
    ) -> Result<Option<DateTime<Utc>>, InvalidJob> {
        match wire {
            None => Ok(None),
            Some(_) if mode == Mode::Full => Err(self.invalid(
                "updated_since",
                "only incremental jobs take updated_since".into(),
            )),
            Some(ts) => proto::time::date_time(&ts)
                .map(Some)
                .ok_or_else(|| self.invalid("updated_since", "out of range".into())),
        }
    }

    /// Filters Clio knows ([`FILTERS`]: it ignores a misspelt one and returns everything),
    /// each with a value.
    fn filters(
        &self,
        wire: HashMap<String, String>,
    ) -> Result<BTreeMap<String, String>, InvalidJob> {
        self.at_most("filters", ("has", wire.len(), "entries"), MAX_FILTERS)?;
        let mut filters = BTreeMap::new();
        for (key, value) in wire {
            // The name becomes part of the field path only once it is known to be harmless.
            if let Err(problem) = check_text(&key, MAX_FIELD_NAME_CHARS) {
                return Err(self.invalid("filters", format!("a filter name {problem}")));
            }
            let field = format!("filters.{key}");
            if !FILTERS.contains(&key.as_str()) {
                return Err(self.invalid(
                    &field,
                    format!("unknown filter; expected one of {}", FILTERS.join(", ")),
                ));
            }
            self.text(&field, &value, MAX_FILTER_VALUE_CHARS)?;
            if value.trim().is_empty() {
                return Err(self.invalid(&field, "must not be empty".into()));
            }
            filters.insert(key, value);
        }
        Ok(filters)
    }

    /// Extra fields per resource, each a Clio field name, for resources the job lists.
    fn extra_fields(
        &self,
        wire: Vec<pb::ResourceFields>,
        resources: &[Resource],
    ) -> Result<BTreeMap<Resource, Vec<String>>, InvalidJob> {
        self.at_most("fields", ("has", wire.len(), "entries"), MAX_FIELD_LISTS)?;
        let mut extra_fields = BTreeMap::new();
        for (i, entry) in wire.into_iter().enumerate() {
            let field = format!("fields[{i}].resource");
            self.text(&field, &entry.resource, MAX_RESOURCE_CHARS)?;
            let resource: Resource = entry
                .resource
                .parse()
                .map_err(|e| self.invalid(&field, format!("{e}")))?;
            if !resources.contains(&resource) {
                return Err(self.invalid(
                    &field,
                    format!("{resource} is not one of the job's resources"),
                ));
            }
            self.field_names(i, &entry.fields)?;
            extra_fields.insert(resource, entry.fields);
        }
        Ok(extra_fields)
    }

    /// The names of `fields[i].fields`: bounded, each a Clio field name.
    fn field_names(&self, i: usize, names: &[String]) -> Result<(), InvalidJob> {
        let field = format!("fields[{i}].fields");
        let count = ("lists", names.len(), "fields");
        self.at_most(&field, count, MAX_FIELDS_PER_RESOURCE)?;
        for (j, name) in names.iter().enumerate() {
            let field = format!("fields[{i}].fields[{j}]");
            self.text(&field, name, MAX_FIELD_NAME_CHARS)?;
            if !is_valid_field(name) {
                return Err(self.invalid(
                    &field,
                    format!(
                        "{} is not a Clio field name (letters, digits, _ and one level of {{...}})",
                        quoted(name)
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
