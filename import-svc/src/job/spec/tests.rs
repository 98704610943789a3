//! Validation of wire jobs: every rule names its field.

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
fn quoted_and_free_text_escape_control_characters_and_shorten() {
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

#[test]
fn priority_defaults_to_scheduled_and_an_unknown_one_is_refused_by_name() {
    assert_eq!(
        validate(wire(), false).unwrap().priority,
        Priority::Scheduled
    );
    let interactive = pb::ImportJob {
        priority: pb::JobPriority::Interactive as i32,
        ..wire()
    };
    let spec = validate(interactive, false).unwrap();
    assert_eq!(spec.priority, Priority::Interactive);
    assert_eq!(spec.to_wire().priority, pb::JobPriority::Interactive as i32);
    let err = validate(
        pb::ImportJob {
            priority: 7,
            ..wire()
        },
        false,
    )
    .unwrap_err();
    assert_eq!(err.field, "priority");
    assert!(err.problem.contains('7'), "{err}");
}
