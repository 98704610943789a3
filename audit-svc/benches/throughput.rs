//! Throughput of the audit log on this machine, each figure next to a baseline measured in
//! the same run:
//!
//! 1. `Record` in batches of 1,000 over gRPC (validation, hash chain, projections,
//!    checkpoints, one tenant so every append serialises on one chain), against plain
//!    INSERTs of the same rows from the client with no chain (same batch size).
//! 2. `Verify` of a 1,000,000-event chain over gRPC, against a plain full scan of the same
//!    rows (streamed to the client, not decoded).
//!
//! `cargo bench -p audit-svc --bench throughput`; sizes via `AUDIT_BENCH_RECORD_EVENTS`
//! and `AUDIT_BENCH_VERIFY_EVENTS`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_svc::append::{Appender, insert_events};
use audit_svc::event::{EventBody, EventRecord};
use chrono::Utc;
use futures_util::TryStreamExt;
use harness::{TestDatabase, channel, with_bearer};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit::v1::{RecordRequest, VerifyRequest};
use proto::common::v1 as pb;
use secrecy::SecretString;
use service_runtime::CancellationToken;
use service_runtime::config::ServiceConfig;
use sqlx::PgPool;
use tokio::net::TcpListener;

const BATCH: usize = 1_000;
const TENANT: &str = "bench-firm";
const SEED_HEX: &str = "0909090909090909090909090909090909090909090909090909090909090909";

fn size(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A realistic event (~250 bytes of payload), one of three kinds.
fn wire_event(tenant: &str, i: usize) -> pb::AuditEvent {
    let kind = [
        pb::EventKind::TokenLeased,
        pb::EventKind::ImportStarted,
        pb::EventKind::ImportCompleted,
    ][i % 3];
    pb::AuditEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        kind: kind as i32,
        tenant: tenant.into(),
        actor: Some(pb::Actor {
            kind: pb::actor::Kind::Service as i32,
            id: "import-svc".into(),
        }),
        subject: Some(pb::Subject {
            kind: pb::subject::Kind::Connection as i32,
            id: format!("conn-{}", i % 97),
        }),
        refs: Some(pb::EventRefs {
            connection_id: format!("conn-{}", i % 97),
            app_id: "import-app".into(),
            principal: format!("person-{}", i % 31),
            region: pb::Region::Us as i32,
            ..Default::default()
        }),
        scopes: vec![pb::Scope {
            family: "contacts".into(),
            access: pb::Access::Read as i32,
        }],
        occurred_at: Some(prost_types::Timestamp {
            seconds: Utc::now().timestamp(),
            nanos: 0,
        }),
        payload_json: serde_json::json!({
            "lease_count": i % 50,
            "first_used_at": "2025-01-01T00:00:00Z",
            "last_used_at": "2025-01-01T01:00:00Z",
            "purposes": ["import:contacts", "import:matters"],
            "job_id": format!("job-{i}"),
            "records": i * 7,
        })
        .to_string(),
        source: "bench".into(),
        ..Default::default()
    }
}

fn bodies(tenant: &str, from: usize, n: usize) -> Vec<EventBody> {
    (from..from + n)
        .map(|i| audit_svc::validation::event("events[0]", &wire_event(tenant, i)).unwrap())
        .collect()
}

async fn start_service(database: &TestDatabase) -> (std::net::SocketAddr, CancellationToken) {
    let mut config = audit_svc::Config {
        service: ServiceConfig {
            callers: harness::caller_config(),
            log_filter: "warn".into(),
            ..ServiceConfig::default()
        },
        ..Default::default()
    };
    config.service.database.url = database.secret_url();
    config.signing.key = Some(SecretString::from(SEED_HEX));
    config.writers = vec![audit_svc::config::WriterGrant {
        caller: "audit_writer".into(),
        sources: vec!["bench".into()],
        kinds: vec![
            "token_leased".into(),
            "import_started".into(),
            "import_completed".into(),
        ],
    }];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(audit_svc::run(config, listener, shutdown.clone()));
    harness::wait_for_health(address, "", harness::ServingStatus::Serving).await;
    (address, shutdown)
}

/// Batched Record over gRPC, and plain INSERTs of the same rows without a chain.
async fn record_throughput(address: std::net::SocketAddr, pool: &PgPool, events: usize) {
    let mut client = AuditServiceClient::new(channel(address).await);
    let token = harness::token_of("audit_writer");
    let batches: Vec<Vec<pb::AuditEvent>> = (0..events / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| wire_event(TENANT, b * BATCH + i))
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        client
            .record(with_bearer(
                RecordRequest {
                    events: batch.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap();
    }
    let chained = started.elapsed();

    sqlx::query("CREATE TABLE events_plain (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)")
        .execute(pool)
        .await
        .unwrap();
    let rows: Vec<Vec<EventRecord>> = (0..events / BATCH)
        .map(|b| {
            bodies(TENANT, b * BATCH, BATCH)
                .into_iter()
                .enumerate()
                .map(|(i, body)| EventRecord {
                    body,
                    sequence: (b * BATCH + i + 1) as u64,
                    recorded_at: Utc::now(),
                    prev_hash: String::new(),
                    hash: String::new(),
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in &rows {
        let mut tx = pool.begin().await.unwrap();
        insert_events(&mut tx, "events_plain", batch).await.unwrap();
        tx.commit().await.unwrap();
    }
    let plain = started.elapsed();

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "record: {events} events in batches of {BATCH}: {:.0} events/s over gRPC with chain, \
         projections and checkpoints ({:.2} s)",
        rate(chained),
        chained.as_secs_f64()
    );
    println!(
        "record baseline: plain INSERT of the same rows, no chain: {:.0} events/s ({:.2} s); \
         chained/plain = {:.2}",
        rate(plain),
        plain.as_secs_f64(),
        rate(chained) / rate(plain)
    );
}

/// Fills one tenant's chain to `events` through the library's append path.
async fn fill_chain(pool: &PgPool, events: usize) {
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    let appender = Appender {
        pool: pool.clone(),
        signer: Arc::new(audit_svc::signing::Signer::from_seed(&seed)),
        clock: service_runtime::clock::system_clock(),
        checkpoint_every: 1_000,
        metrics: Default::default(),
    };
    let started = Instant::now();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<EventBody>>(4);
    // Bodies are built on another task while the previous batch is appended.
    tokio::spawn(async move {
        for b in 0..events / 5_000 {
            sender
                .send(bodies("verify-firm", b * 5_000, 5_000))
                .await
                .unwrap();
        }
    });
    let mut done = 0;
    while let Some(batch) = receiver.recv().await {
        appender.append(&batch).await.unwrap();
        done += batch.len();
        if done % 100_000 == 0 {
            println!(
                "  filled {done} events ({:.0} events/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
}

async fn verify_speed(address: std::net::SocketAddr, pool: &PgPool, events: usize) {
    fill_chain(pool, events).await;
    let mut client = AuditServiceClient::new(channel(address).await);
    let token = harness::token_of("compliance");
    let started = Instant::now();
    let verdict = client
        .verify(with_bearer(
            VerifyRequest {
                tenant: "verify-firm".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let verify = started.elapsed();
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.events_checked, events as u64);

    let started = Instant::now();
    let sql = format!(
        "SELECT {} FROM events WHERE tenant = 'verify-firm' ORDER BY sequence",
        audit_svc::store::EVENT_COLUMNS
    );
    let mut rows = sqlx::query(&sql).fetch(pool);
    let mut scanned = 0usize;
    while rows.try_next().await.unwrap().is_some() {
        scanned += 1;
    }
    let scan = started.elapsed();
    assert_eq!(scanned, events);
    println!(
        "verify: {events} events, {} checkpoints in {:.2} s ({:.0} events/s)",
        verdict.checkpoints_checked,
        verify.as_secs_f64(),
        events as f64 / verify.as_secs_f64()
    );
    println!(
        "verify baseline: plain full scan of the same rows to the client: {:.2} s; \
         verify/scan = {:.2}",
        scan.as_secs_f64(),
        verify.as_secs_f64() / scan.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let database = TestDatabase::create().await;
        let (address, shutdown) = start_service(&database).await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&database.url)
            .await
            .unwrap();
        record_throughput(
            address,
            &pool,
            size("AUDIT_BENCH_RECORD_EVENTS", 50_000).max(BATCH),
        )
        .await;
        verify_speed(
            address,
            &pool,
            size("AUDIT_BENCH_VERIFY_EVENTS", 1_000_000).max(5_000),
        )
        .await;
        shutdown.cancel();
        pool.close().await;
    });
}
