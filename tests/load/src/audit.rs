//! The audit log (ported from `audit-svc/benches/throughput.rs`), each figure beside a
//! reference in the same run on the same database:
//!
//! - `Record` in batches of 1,000 over gRPC, two writers at once (validation, hash chain,
//!   projections, checkpoints; one tenant, so every append serialises on one chain),
//!   against plain INSERTs of the same rows from the client with no chain (same batch size,
//!   same two writers); then the chain is verified intact.
//! - `Verify` of a chain over gRPC, against a plain full scan of the same rows and columns
//!   (streamed to the client, not decoded). Verify checks the stretches between signed
//!   checkpoints side by side, each read on its own connection (one per core, up to a
//!   quarter of its pool); the reference stays one query on one connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use audit_svc::append::{Appender, insert_events};
use audit_svc::event::{EventBody, EventRecord};
use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt};
use harness::{SpawnedService, TestDatabase, channel, spawn_service, with_bearer};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit::v1::{RecordRequest, VerifyRequest, VerifyResponse};
use proto::common::v1 as pb;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::platform::service_config;
use crate::row::{Row, Target};

const BATCH: usize = 1_000;
/// `Record` calls (and, for the reference, INSERT transactions) in flight at once: a
/// tenant's events come from two writers, auth-svc's and import-svc's outboxes, each
/// delivering batches. One writer leaves audit-svc idle while the client encodes and waits
/// for each answer (session 12, 200,000 events: 19,907 and 22,286 events/s with one,
/// 24,557 and 27,751 with two, 25,351 with three); the reference gets the same two.
const WRITERS: usize = 2;
/// The chain `Verify` reads is filled in batches of this many events.
const FILL_BATCH: usize = 5_000;
const RECORD_TENANT: &str = "bench-firm";
const VERIFY_TENANT: &str = "verify-firm";
const SEED_HEX: &str = "0909090909090909090909090909090909090909090909090909090909090909";

/// audit-svc on a fresh database, with a writer grant for the benchmark's events.
struct AuditUnderTest {
    service: SpawnedService,
    pool: PgPool,
    _database: TestDatabase,
}

impl AuditUnderTest {
    async fn start() -> Result<AuditUnderTest> {
        let database = TestDatabase::create().await;
        let mut config = audit_svc::Config {
            service: service_config(database.secret_url()),
            ..Default::default()
        };
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
        let service =
            spawn_service(|listener, shutdown| audit_svc::run(config, listener, shutdown)).await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database.url)
            .await?;
        Ok(AuditUnderTest {
            service,
            pool,
            _database: database,
        })
    }

    async fn stop(self) -> Result<()> {
        self.pool.close().await;
        self.service.stop().await
    }
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

fn bodies(tenant: &str, from: usize, n: usize) -> Result<Vec<EventBody>> {
    (from..from + n)
        .map(|i| {
            audit_svc::validation::event("events[0]", &wire_event(tenant, i))
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect()
}

async fn verify(address: SocketAddr, tenant: &str) -> Result<VerifyResponse> {
    let mut client = AuditServiceClient::new(channel(address).await);
    let verdict = client
        .verify(with_bearer(
            VerifyRequest {
                tenant: tenant.into(),
                ..Default::default()
            },
            &harness::token_of("compliance"),
        ))
        .await?
        .into_inner();
    Ok(verdict)
}

/// Record throughput: batched `Record` over gRPC against plain INSERTs of the same rows.
pub async fn record(events: usize) -> Result<Row> {
    let events = events.max(BATCH) / BATCH * BATCH;
    let audit = AuditUnderTest::start().await?;
    let measured = measure_record(&audit, events).await;
    audit.stop().await?;
    let (chained, plain) = measured?;
    let rate = |d: Duration| events as f64 / d.as_secs_f64().max(1e-9);
    Ok(Row::new(
        format!("audit Record, {events} events in batches of {BATCH}, {WRITERS} writers"),
        rate(chained),
        "events/s",
    )
    .against(
        "plain INSERT of the same rows, no chain, as many writers",
        rate(plain),
        "events/s",
    )
    .target(Target::FigureAtLeast { min: 20_000.0 })
    .command(format!(
        "cargo run --release -p load -- audit-record --events {events}"
    ))
    .note(format!(
        "one tenant (one chain), {WRITERS} batches in flight at once, as a tenant's two outboxes (auth-svc's and import-svc's) send them; chain verified intact afterwards; chained {:.2} s, plain {:.2} s",
        chained.as_secs_f64(),
        plain.as_secs_f64()
    ))
    .note(record_limit_note(rate(chained), rate(plain))))
}

/// When the chain misses the absolute target, what it asks of the database: the chained
/// Record runs at a fairly steady share of a plain INSERT of the same rows (each event is
/// hashed onto the one before, so a tenant's appends serialise), so 20,000 events/s needs a
/// plain INSERT that fast divided by that share.
fn record_limit_note(chained: f64, plain: f64) -> String {
    const TARGET: f64 = 20_000.0;
    if chained >= TARGET {
        return String::new();
    }
    let share = chained / plain.max(1e-9);
    format!(
        "limit: the chained Record ran at {share:.2} of a plain INSERT of the same rows; \
         {TARGET:.0} events/s at that share needs plain INSERTs at {:.0} events/s, and this \
         run's Postgres gave {plain:.0}; tried: a batch of 1,000 is one transaction with one \
         statement of each kind (the tenant's advisory lock, the head, a lookup of the batch's \
         event ids for idempotency, the events by the same UNNEST INSERT the reference uses, \
         the projections by one server-side call, a checkpoint signed when due); what the \
         chain adds to the reference is the canonical encoding and hash of every event, the \
         id lookup and the projections, on the cores the benchmark's own client shares",
        TARGET / share.max(1e-9)
    )
}

async fn measure_record(audit: &AuditUnderTest, events: usize) -> Result<(Duration, Duration)> {
    let client = AuditServiceClient::new(channel(audit.service.address).await);
    let token = harness::token_of("audit_writer");
    let batches: Vec<Vec<pb::AuditEvent>> = (0..events / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| wire_event(RECORD_TENANT, b * BATCH + i))
                .collect()
        })
        .collect();
    let started = Instant::now();
    futures_util::stream::iter(batches)
        .map(|batch| {
            let mut client = client.clone();
            let token = &token;
            async move {
                client
                    .record(with_bearer(
                        RecordRequest {
                            events: batch,
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
            }
        })
        .buffer_unordered(WRITERS)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let chained = started.elapsed();
    let verdict = verify(audit.service.address, RECORD_TENANT).await?;
    if !verdict.ok || verdict.events_checked != events as u64 {
        bail!("the recorded chain is not intact: {verdict:?}");
    }

    sqlx::query("CREATE TABLE events_plain (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)")
        .execute(&audit.pool)
        .await?;
    let mut rows = Vec::with_capacity(events / BATCH);
    for b in 0..events / BATCH {
        let batch: Vec<EventRecord> = bodies(RECORD_TENANT, b * BATCH, BATCH)?
            .into_iter()
            .enumerate()
            .map(|(i, body)| EventRecord {
                body,
                sequence: (b * BATCH + i + 1) as u64,
                recorded_at: Utc::now(),
                prev_hash: String::new(),
                hash: String::new(),
            })
            .collect();
        rows.push(batch);
    }
    let started = Instant::now();
    futures_util::stream::iter(&rows)
        .map(|batch| async move {
            let mut tx = audit.pool.begin().await?;
            insert_events(&mut tx, "events_plain", batch)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tx.commit().await?;
            anyhow::Ok(())
        })
        .buffer_unordered(WRITERS)
        .try_for_each(|()| async { Ok(()) })
        .await?;
    Ok((chained, started.elapsed()))
}

/// Fills one tenant's chain to `events` through the library's append path (bodies are
/// built on another task while the previous batch is appended).
async fn fill_chain(pool: &PgPool, events: usize) -> Result<()> {
    let seed: [u8; 32] = hex::decode(SEED_HEX)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("seed length"))?;
    let appender = Appender {
        pool: pool.clone(),
        signer: Arc::new(audit_svc::signing::Signer::from_seed(&seed)),
        clock: service_runtime::clock::system_clock(),
        checkpoint_every: 1_000,
        metrics: audit_svc::metrics::AuditMetrics::default(),
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<EventBody>>(4);
    let producer = tokio::spawn(async move {
        for b in 0..events / FILL_BATCH {
            let batch = bodies(VERIFY_TENANT, b * FILL_BATCH, FILL_BATCH)?;
            if sender.send(batch).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    });
    while let Some(batch) = receiver.recv().await {
        appender
            .append(&batch)
            .await
            .map_err(|e| anyhow::anyhow!("append: {e}"))?;
    }
    producer.await??;
    Ok(())
}

/// Verify speed: `Verify` of a chain of `events` against a plain scan of its rows.
pub async fn verify_chain(events: usize) -> Result<Row> {
    let events = events.max(FILL_BATCH) / FILL_BATCH * FILL_BATCH;
    let audit = AuditUnderTest::start().await?;
    let measured = measure_verify(&audit, events).await;
    audit.stop().await?;
    let (verify, scan, checkpoints) = measured?;
    Ok(Row::new(
        format!("audit Verify of {events} events"),
        verify.as_secs_f64(),
        "s",
    )
    .against("plain full scan of the same rows", scan.as_secs_f64(), "s")
    .target(Target::FigureBelow { max: 3.0 })
    .command(format!(
        "cargo run --release -p load -- audit-verify --events {events}"
    ))
    .note(format!(
        "{checkpoints} checkpoints checked; {:.0} events/s; Verify reads the stretches \
         between checkpoints side by side as binary COPY, one connection per core ({cores} \
         here) up to a quarter of its pool; the reference is one plain query on one \
         connection, rows not decoded",
        events as f64 / verify.as_secs_f64().max(1e-9),
        cores = std::thread::available_parallelism().map_or(1, usize::from)
    ))
    .note(scan_limit_note(verify, scan)))
}

/// When only reading the rows already takes longer than the target, the target is below
/// what this machine's Postgres can hand over, before any hashing.
fn scan_limit_note(verify: Duration, scan: Duration) -> String {
    // Only a missed target needs its limit named (Verify reads side by side, so it can
    // beat a scan that alone is over the target).
    if verify.as_secs_f64() < 3.0 || scan.as_secs_f64() < 3.0 {
        return String::new();
    }
    format!(
        "limit: a plain query of the same rows and columns alone takes {:.2} s on this \
         machine, above the 3 s target before any event is hashed",
        scan.as_secs_f64()
    )
}

async fn measure_verify(
    audit: &AuditUnderTest,
    events: usize,
) -> Result<(Duration, Duration, u64)> {
    fill_chain(&audit.pool, events).await?;
    let started = Instant::now();
    let verdict = verify(audit.service.address, VERIFY_TENANT).await?;
    let verify_time = started.elapsed();
    if !verdict.ok || verdict.events_checked != events as u64 {
        bail!("Verify of {events} events: {verdict:?}");
    }
    let started = Instant::now();
    // The columns Verify reads (it casts each to the type it reads: the same values).
    let sql = format!(
        "SELECT {} FROM events WHERE tenant = '{VERIFY_TENANT}' ORDER BY sequence",
        audit_svc::store::EVENT_COLUMNS
    );
    let mut rows = sqlx::query(&sql).fetch(&audit.pool);
    let mut scanned = 0usize;
    while rows.try_next().await.context("scan the events")?.is_some() {
        scanned += 1;
    }
    let scan = started.elapsed();
    if scanned != events {
        bail!("the scan read {scanned} events of {events}");
    }
    Ok((verify_time, scan, verdict.checkpoints_checked))
}
