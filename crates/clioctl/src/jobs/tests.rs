use super::*;

fn job(status: import::JobStatus, reason: &str) -> import::Job {
    import::Job {
        job_id: "j1".into(),
        status: status as i32,
        failure_reason: reason.into(),
        ..Default::default()
    }
}

#[test]
fn only_a_completed_job_succeeds() {
    assert!(succeeded(&job(import::JobStatus::Completed, "")).is_ok());
    for status in [
        import::JobStatus::Failed,
        import::JobStatus::Cancelled,
        import::JobStatus::DeadLettered,
    ] {
        let error = succeeded(&job(status, "grant revoked")).unwrap_err();
        assert_eq!(crate::exit::code_of(&error), code::BAD_OUTCOME);
        assert!(error.to_string().contains("grant revoked"), "{error}");
    }
}

#[test]
fn filters_are_name_value_pairs() {
    assert_eq!(
        parse_pair("status=open"),
        Ok(("status".into(), "open".into()))
    );
    assert!(parse_pair("status").is_err());
}
