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
    assert_eq!(
        import.job_status(job_id).await.as_deref(),
        Some("dead_lettered")
    );

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
    assert!(broker.get(&topology.jobs_queue).await.is_none());
}
