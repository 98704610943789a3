//! Watch streams events live and resumes from a cursor after a disconnect — here a whole
//! service restart — without gaps or duplicates.

use std::time::Duration;

use harness::TestDatabase;
use proto::audit::v1::WatchRequest;
use proto::common::v1 as pb;
use tonic::codec::Streaming;

use crate::support::{RunningAudit, Setup, compliance, import_events, start};

async fn watch(audit: &RunningAudit, after: u64) -> Streaming<pb::AuditEvent> {
    audit
        .audit()
        .await
        .watch(compliance(WatchRequest {
            tenant: "firm-a".into(),
            after_sequence: after,
            kinds: vec![],
        }))
        .await
        .unwrap()
        .into_inner()
}

/// The next `n` sequences from the stream, each within a deadline.
async fn next(stream: &mut Streaming<pb::AuditEvent>, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        assert_eq!(event.tenant, "firm-a");
        got.push(event.sequence);
    }
    got
}

#[tokio::test]
async fn watch_resumes_across_a_restart_without_gaps_or_duplicates() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    audit.record(import_events("firm-a", 5)).await.unwrap();
    audit.record(import_events("firm-b", 3)).await.unwrap();

    let mut stream = watch(&audit, 0).await;
    let mut seen = next(&mut stream, 5).await;
    // Live: recorded after the watch started.
    audit.record(import_events("firm-a", 4)).await.unwrap();
    seen.extend(next(&mut stream, 4).await);

    // Stopping the service ends the stream; events recorded after the restart, and
    // before the client is back, must all arrive.
    audit.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    assert!(
        !matches!(end, Ok(Ok(Some(_)))),
        "no event after shutdown: {end:?}"
    );

    let audit = start(&database, Setup::default()).await;
    audit.record(import_events("firm-a", 3)).await.unwrap();
    let cursor = *seen.last().unwrap();
    let mut stream = watch(&audit, cursor).await;
    seen.extend(next(&mut stream, 3).await);
    audit.record(import_events("firm-a", 2)).await.unwrap();
    seen.extend(next(&mut stream, 2).await);

    assert_eq!(seen, (1..=14).collect::<Vec<u64>>());
    audit.stop().await;
}
