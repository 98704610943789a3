//! Record: idempotency, concurrent appends to one chain, Query with filters and paging (in
//! either order),
//! and bad requests refused naming the field.

use chrono::{Duration, Utc};
use harness::TestDatabase;
use proto::audit::v1::{QueryRequest, RecordRequest, TimeRange, VerifyRequest};
use proto::common::v1 as pb;
use tonic::Code;

use crate::support::{Ev, Setup, compliance, import_events, start, ts, writer};

#[tokio::test]
async fn recording_an_event_id_twice_stores_it_once_and_returns_the_original() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let event = import_events("firm-a", 1).remove(0);

    let first = audit.record(vec![event.clone()]).await.unwrap();
    assert_eq!(first.duplicates, 0);
    let stored = &first.events[0];
    assert_eq!(stored.sequence, 1);
    assert_eq!(stored.hash.len(), 64);

    let again = audit
        .record(vec![event.clone(), import_events("firm-a", 1).remove(0)])
        .await
        .unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(
        again.events[0], *stored,
        "the original comes back unchanged"
    );
    assert_eq!(again.events[1].sequence, 2);

    let mut db = database.connect().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_id = $1::uuid")
        .bind(&event.event_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(count, 1);

    // The same id for another fact is a producer bug: refused, naming the field.
    let mut other = event.clone();
    other.reason = "something else".into();
    let refused = audit.record(vec![other]).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().starts_with("events[0].event_id"),
        "{}",
        refused.message()
    );
    audit.stop().await;
}

#[tokio::test]
async fn concurrent_batches_to_one_tenant_form_one_unbroken_chain() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = audit.audit().await;
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            for _ in 0..5 {
                client
                    .record(writer(RecordRequest {
                        events: import_events("firm-a", 20),
                        ..Default::default()
                    }))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let verdict = audit
        .audit()
        .await
        .verify(compliance(VerifyRequest {
            tenant: "firm-a".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.events_checked, 800);
    // Every 10 events a checkpoint: the batches of 20 each sign their head.
    assert!(verdict.checkpoints_checked >= 40, "{verdict:?}");
    audit.stop().await;
}

#[tokio::test]
async fn query_filters_by_kind_subject_actor_and_time_and_pages_with_a_cursor() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let t0 = Utc::now() - Duration::days(10);
    let mut events = Vec::new();
    for i in 0..25 {
        let kind = if i % 5 == 0 {
            pb::EventKind::TokenLeased
        } else {
            pb::EventKind::ImportStarted
        };
        events.push(
            Ev::new(kind, "firm-a", t0 + Duration::hours(i))
                .subject(pb::subject::Kind::Connection, &format!("c{}", i % 2))
                .actor(
                    pb::actor::Kind::Service,
                    if i < 12 { "import-svc" } else { "ops" },
                )
                .build(),
        );
    }
    events.extend(import_events("firm-b", 3));
    audit.record(events).await.unwrap();

    let mut client = audit.audit().await;
    let query = |request: QueryRequest| {
        let mut client = client.clone();
        async move {
            client
                .query(compliance(request))
                .await
                .map(|r| r.into_inner())
        }
    };

    // Every page of `request`, `size` at a time: the sequences in the order they came.
    let all_pages = |request: QueryRequest, size: u32| {
        let query = &query;
        async move {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let page = query(QueryRequest {
                    page: Some(pb::PageRequest {
                        page_size: size,
                        page_token: token.clone(),
                    }),
                    ..request.clone()
                })
                .await
                .unwrap();
                seen.extend(page.events.iter().map(|e| e.sequence));
                token = page.page.unwrap().next_page_token;
                if token.is_empty() {
                    return seen;
                }
            }
        }
    };

    // Paging through everything of firm-a, 10 at a time.
    let firm_a = QueryRequest {
        tenant: "firm-a".into(),
        ..Default::default()
    };
    assert_eq!(all_pages(firm_a, 10).await, (1..=25).collect::<Vec<u64>>());

    // Newest first (a dashboard's order), still filtered, paged the other way; an
    // oldest-first token is refused in that order rather than misread.
    let newest_ops = QueryRequest {
        tenant: "firm-a".into(),
        actor_id: "ops".into(),
        newest_first: true,
        ..Default::default()
    };
    assert_eq!(
        all_pages(newest_ops, 5).await,
        (13..=25).rev().collect::<Vec<u64>>()
    );
    let refused = query(QueryRequest {
        tenant: "firm-a".into(),
        newest_first: true,
        page: Some(pb::PageRequest {
            page_size: 5,
            page_token: "after:3".into(),
        }),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("page.page_token"), "{refused:?}");

    let leased = query(QueryRequest {
        tenant: "firm-a".into(),
        kinds: vec![pb::EventKind::TokenLeased as i32],
        subject: Some(pb::Subject {
            kind: pb::subject::Kind::Connection as i32,
            id: "c0".into(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // i in {0, 10, 20}: token_leased and subject c0.
    assert_eq!(
        leased.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 11, 21]
    );

    let windowed = query(QueryRequest {
        tenant: "firm-a".into(),
        actor_id: "ops".into(),
        occurred: Some(TimeRange {
            from: Some(ts(t0 + Duration::hours(20))),
            to: Some(ts(t0 + Duration::hours(23))),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        windowed
            .events
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        vec![21, 22, 23]
    );
    let other = client
        .query(compliance(QueryRequest {
            tenant: "firm-b".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.events.len(), 3);
    audit.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_field() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let expect_invalid = |outcome: Result<(), tonic::Status>, field: &str| {
        let status = outcome.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    };
    let valid = import_events("firm-a", 1).remove(0);

    let mut unknown_kind = valid.clone();
    unknown_kind.kind = 999;
    expect_invalid(
        audit.record(vec![unknown_kind]).await.map(drop),
        "events[0].kind",
    );

    let mut no_tenant = valid.clone();
    no_tenant.tenant.clear();
    expect_invalid(
        audit.record(vec![valid.clone(), no_tenant]).await.map(drop),
        "events[1].tenant",
    );

    let mut oversized = valid.clone();
    oversized.payload_json = serde_json::json!({ "blob": "x".repeat(70 * 1024) }).to_string();
    expect_invalid(
        audit.record(vec![oversized]).await.map(drop),
        "events[0].payload_json",
    );

    expect_invalid(audit.record(vec![]).await.map(drop), "events");

    let mut client = audit.audit().await;
    let now = Utc::now();
    expect_invalid(
        client
            .query(compliance(QueryRequest {
                tenant: "firm-a".into(),
                occurred: Some(TimeRange {
                    from: Some(ts(now)),
                    to: Some(ts(now - Duration::hours(1))),
                }),
                ..Default::default()
            }))
            .await
            .map(drop),
        "occurred.to",
    );
    expect_invalid(
        client
            .query(compliance(QueryRequest::default()))
            .await
            .map(drop),
        "tenant",
    );
    expect_invalid(
        client
            .query(compliance(QueryRequest {
                tenant: "firm-a".into(),
                kinds: vec![4242],
                ..Default::default()
            }))
            .await
            .map(drop),
        "kinds[0]",
    );
    expect_invalid(
        client
            .verify(compliance(VerifyRequest::default()))
            .await
            .map(drop),
        "tenant",
    );
    // Nothing of the refused batches was stored.
    let mut db = database.connect().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(count, 0);
    audit.stop().await;
}
