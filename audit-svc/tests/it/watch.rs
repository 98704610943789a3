//! Watch streams events live and resumes from a cursor after a disconnect — here a whole
//! service restart — without gaps or duplicates; with a kind filter it streams only those
//! kinds, also after resuming.

use std::time::Duration;

use chrono::Utc;
use harness::TestDatabase;
use proto::audit::v1::WatchRequest;
use proto::common::v1 as pb;
use tonic::Code;
use tonic::codec::Streaming;

use crate::support::{Ev, RunningAudit, Setup, assert_refused, compliance, import_events, start};

async fn watch_kinds(
    audit: &RunningAudit,
    after: u64,
    kinds: &[pb::EventKind],
) -> Result<Streaming<pb::AuditEvent>, tonic::Status> {
    audit
        .audit()
        .await
        .watch(compliance(WatchRequest {
            tenant: "firm-a".into(),
            after_sequence: after,
            kinds: kinds.iter().map(|k| *k as i32).collect(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn watch(audit: &RunningAudit, after: u64) -> Streaming<pb::AuditEvent> {
    watch_kinds(audit, after, &[]).await.unwrap()
}

/// The next `n` events from the stream, each within a deadline.
async fn next_events(stream: &mut Streaming<pb::AuditEvent>, n: usize) -> Vec<pb::AuditEvent> {
    let mut got = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        assert_eq!(event.tenant, "firm-a");
        got.push(event);
    }
    got
}

/// The next `n` sequences from the stream, each within a deadline.
async fn next(stream: &mut Streaming<pb::AuditEvent>, n: usize) -> Vec<u64> {
    next_events(stream, n)
        .await
        .iter()
        .map(|e| e.sequence)
        .collect()
}

/// One `firm-a` event of `kind`.
fn event(kind: pb::EventKind) -> pb::AuditEvent {
    Ev::new(kind, "firm-a", Utc::now())
        .subject(pb::subject::Kind::Job, "job-1")
        .build()
}

/// Imports started and completed, alternating, ending with a completion: a watcher of
/// completions that was sent a start would see it before the last completion.
fn alternating(pairs: usize) -> Vec<pb::AuditEvent> {
    (0..pairs)
        .flat_map(|_| {
            [
                event(pb::EventKind::ImportStarted),
                event(pb::EventKind::ImportCompleted),
            ]
        })
        .collect()
}

/// (sequence, kind) of each event.
fn kinds_of(events: &[pb::AuditEvent]) -> Vec<(u64, i32)> {
    events.iter().map(|e| (e.sequence, e.kind)).collect()
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

#[tokio::test]
async fn watch_with_a_kind_filter_streams_only_those_kinds_also_after_resuming() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let completed = pb::EventKind::ImportCompleted as i32;
    // Sequences 1..=6: completions at 2, 4, 6.
    audit.record(alternating(3)).await.unwrap();

    let mut stream = watch_kinds(&audit, 0, &[pb::EventKind::ImportCompleted])
        .await
        .unwrap();
    let seen = next_events(&mut stream, 3).await;
    assert_eq!(
        kinds_of(&seen),
        vec![(2, completed), (4, completed), (6, completed)]
    );
    // Live, 7..=10: completions at 8 and 10.
    audit.record(alternating(2)).await.unwrap();
    let live = next_events(&mut stream, 2).await;
    assert_eq!(kinds_of(&live), vec![(8, completed), (10, completed)]);
    drop(stream);

    // Resume after 8 with the same filter: 10 again, then only new completions (12, 14).
    let mut resumed = watch_kinds(&audit, 8, &[pb::EventKind::ImportCompleted])
        .await
        .unwrap();
    audit.record(alternating(2)).await.unwrap();
    let after = next_events(&mut resumed, 3).await;
    assert_eq!(
        kinds_of(&after),
        vec![(10, completed), (12, completed), (14, completed)]
    );
    audit.stop().await;
}

#[tokio::test]
async fn watch_refuses_an_unknown_kind_naming_the_field() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let status = audit
        .audit()
        .await
        .watch(compliance(WatchRequest {
            tenant: "firm-a".into(),
            after_sequence: 0,
            kinds: vec![pb::EventKind::ImportStarted as i32, 9_999],
        }))
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "kinds[1]");
    assert!(status.message().contains("9999"), "{}", status.message());
    audit.stop().await;
}
