//! What a job asks for, validated: the domain form of the wire `ImportJob`.
//!
//! Queue messages and `SubmitJob` both arrive here, so one set of rules decides what is a
//! valid job. Every error names the field, because the reason travels with the message to
//! the dead-letter queue and is all an operator has to go on.

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
    pub fn new(job_id: Option<Uuid>, field: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidJob {
            job_id,
            field: field.into(),
            problem: problem.into(),
        }
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
    let job_id = match wire.job_id.trim() {
        "" if assign_id => Uuid::now_v7(),
        "" => return Err(InvalidJob::new(None, "job_id", "must not be empty")),
        text => Uuid::parse_str(text)
            .map_err(|_| InvalidJob::new(None, "job_id", format!("{text:?} is not a UUID")))?,
    };
    let invalid = |field: &str, problem: String| InvalidJob::new(Some(job_id), field, problem);

    let connection_id = wire.connection_id.trim().to_owned();
    if connection_id.is_empty() {
        return Err(invalid("connection_id", "must not be empty".into()));
    }

    if wire.resources.is_empty() {
        return Err(invalid(
            "resources",
            "must name at least one resource".into(),
        ));
    }
    let mut resources = Vec::new();
    for (i, name) in wire.resources.iter().enumerate() {
        let resource: Resource = name
            .parse()
            .map_err(|e| invalid(&format!("resources[{i}]"), format!("{e}")))?;
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

    let mut filters = BTreeMap::new();
    for (key, value) in wire.filters {
        if !FILTERS.contains(&key.as_str()) {
            return Err(invalid(
                &format!("filters.{key}"),
                format!("unknown filter; expected one of {}", FILTERS.join(", ")),
            ));
        }
        if value.trim().is_empty() {
            return Err(invalid(
                &format!("filters.{key}"),
                "must not be empty".into(),
            ));
        }
        filters.insert(key, value);
    }

    let mut extra_fields = BTreeMap::new();
    for (i, entry) in wire.fields.into_iter().enumerate() {
        let resource: Resource = entry
            .resource
            .parse()
            .map_err(|e| invalid(&format!("fields[{i}].resource"), format!("{e}")))?;
        if !resources.contains(&resource) {
            return Err(invalid(
                &format!("fields[{i}].resource"),
                format!("{resource} is not one of the job's resources"),
            ));
        }
        for (j, field) in entry.fields.iter().enumerate() {
            if !crate::clio::fields::is_valid_field(field) {
                return Err(invalid(
                    &format!("fields[{i}].fields[{j}]"),
                    format!(
                        "{field:?} is not a Clio field name (letters, digits, _ and one level of {{...}})"
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
        requested_by: wire.requested_by.trim().to_owned(),
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

    #[test]
    fn submit_may_leave_the_id_to_the_service() {
        let mut job = wire();
        job.job_id = String::new();
        assert!(validate(job, true).is_ok());
    }
}
