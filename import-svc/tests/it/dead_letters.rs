//! Bad jobs are refused before any Clio call and parked in the dead-letter queue with the
//! reason in a header; nothing is lost and the job (when its id is readable) is recorded.

use crate::support::{Setup, start};

#[tokio::test]
async fn malformed_protobuf_and_json_bodies_are_dead_lettered_with_reasons() {
    let import = start("dlq-malformed", Setup::default()).await;

    let garbage = [0xff_u8, 0xff, 0xff, 0x01];
    import
        .publish_job(&garbage, Some("application/x-protobuf"))
        .await;
    let (dead, reason) = import.next_dead_letter().await;
    assert_eq!(dead.body, garbage, "the original body is kept");
    assert!(reason.contains("not a protobuf ImportJob"), "{reason}");

    import
        .publish_job(b"{\"job_id\": ", Some("application/json"))
        .await;
    let (dead, reason) = import.next_dead_letter().await;
    assert!(reason.starts_with("body: not a JSON ImportJob"), "{reason}");
    assert_eq!(dead.content_type.as_deref(), Some("application/json"));

    import.stop().await;
}

#[tokio::test]
async fn invalid_fields_name_the_field_and_the_job_is_recorded_as_dead_lettered() {
    let import = start("dlq-invalid", Setup::default()).await;
    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000aa";

    let body = format!(
        r#"{{"job_id":"{job_id}","connection_id":"c-1","resources":["contacts","invoices"]}}"#
    );
    import.publish_job(body.as_bytes(), None).await;
    let (dead, reason) = import.next_dead_letter().await;
    assert!(
        reason.starts_with("resources[1]: unknown resource \"invoices\""),
        "{reason}"
    );
    assert_eq!(dead.header("x-job-id").as_deref(), Some(job_id));
    assert_eq!(import.recorded_status(job_id).await, "dead_lettered");

    // A misspelt key is refused rather than silently dropped.
    let body = format!(r#"{{"job_id":"{job_id}","connection":"c-1","resources":["contacts"]}}"#);
    import
        .publish_job(body.as_bytes(), Some("application/json"))
        .await;
    let (_, reason) = import.next_dead_letter().await;
    assert!(reason.contains("unknown field `connection`"), "{reason}");

    // Every message was settled. Checked with the service stopped: a message it still held
    // unacknowledged would be invisible to basic_get until its channel closed.
    let (broker, topology) = import.stop_keeping_broker().await;
    assert!(broker.get(&topology.names.jobs_queue).await.is_none());
}

#[tokio::test]
async fn hostile_strings_are_dead_lettered_naming_the_field() {
    use proto::imports::v1 as pb;

    let import = start("dlq-hostile", Setup::default()).await;
    let nul_connection = "0193a0c4-6d1e-7cc0-8000-0000000000e1";
    let long_requester = "0193a0c4-6d1e-7cc0-8000-0000000000e2";
    let escape_requester = "0193a0c4-6d1e-7cc0-8000-0000000000e3";
    let protobuf = |job: pb::ImportJob| prost::Message::encode_to_vec(&job);
    let job = |job_id: &str| pb::ImportJob {
        job_id: job_id.into(),
        connection_id: "c-1".into(),
        resources: vec!["contacts".into()],
        ..Default::default()
    };
    let mut not_utf8 = protobuf(pb::ImportJob {
        requested_by: "ab".into(),
        ..job("0193a0c4-6d1e-7cc0-8000-0000000000e4")
    });
    let last = not_utf8.len() - 1;
    not_utf8[last] = 0xff;

    let cases: Vec<(Vec<u8>, &str, &str, Option<&str>)> = vec![
        (
            serde_json::json!({
                "job_id": nul_connection, "connection_id": "c-1\u{0}",
                "resources": ["contacts"], "requested_by": "mallory\u{0}",
            })
            .to_string()
            .into_bytes(),
            "application/json",
            "connection_id: must not contain a NUL character",
            Some(nul_connection),
        ),
        (
            serde_json::json!({
                "job_id": long_requester, "connection_id": "c-1",
                "resources": ["contacts"], "requested_by": "r".repeat(10 * 1024),
            })
            .to_string()
            .into_bytes(),
            "application/json",
            "requested_by: is 10240 characters long; at most 256",
            Some(long_requester),
        ),
        (
            br#"{"job_id":"x","evil\u0000\u001b[2J":1}"#.to_vec(),
            "application/json",
            "body: not a JSON ImportJob: unknown field `evil\\0\\u{1b}[2J`",
            None,
        ),
        (
            protobuf(pb::ImportJob {
                requested_by: "\u{1b}[31mred".into(),
                ..job(escape_requester)
            }),
            "application/x-protobuf",
            "requested_by: must not contain control characters (found U+001B)",
            Some(escape_requester),
        ),
        (
            protobuf(job("0193a0c4\0not-a-uuid")),
            "application/x-protobuf",
            "job_id: must not contain a NUL character",
            None,
        ),
        (
            protobuf(job(&"9".repeat(10 * 1024))),
            "application/x-protobuf",
            "job_id: is 10240 characters long; at most 128",
            None,
        ),
        (
            not_utf8,
            "application/x-protobuf",
            "body: not a protobuf ImportJob: failed to decode Protobuf message: ImportJob.requested_by: invalid string value: data is not UTF-8 encoded",
            None,
        ),
    ];
    for (body, content_type, expected, job_id) in cases {
        import.publish_job(&body, Some(content_type)).await;
        let (dead, reason) = import.next_dead_letter().await;
        assert!(
            reason.starts_with(expected),
            "expected {expected:?}, got {reason:?}"
        );
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        assert!(reason.len() < 2_000, "{reason:?}");
        assert_eq!(dead.body, body, "the original body is kept");
        if let Some(job_id) = job_id {
            assert_eq!(dead.header("x-job-id").as_deref(), Some(job_id));
            assert_eq!(
                import.recorded_status(job_id).await,
                "dead_lettered",
                "{expected}"
            );
        }
    }
    // The refusal is stored printable.
    let mut db = import.database.connect().await;
    let (connection_id, failure): (String, String) =
        sqlx::query_as("SELECT connection_id, failure_reason FROM jobs WHERE job_id = $1::uuid")
            .bind(nul_connection)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(connection_id, "c-1\\0");
    assert!(
        failure.starts_with("connection_id: must not contain a NUL"),
        "{failure}"
    );

    // Every message was settled (none handed back to loop on a database error).
    let (broker, topology) = import.stop_keeping_broker().await;
    assert!(broker.get(&topology.names.jobs_queue).await.is_none());
}
