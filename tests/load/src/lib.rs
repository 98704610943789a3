//! clio-load: every hot path of clio-connect measured beside its reference in the same run
//! (issue 16). Each row prints the figure, the reference, their ratio and the target.
//!
//! The rows start what they measure themselves, on `127.0.0.1` only: the Clio simulator,
//! the services (in this process, or import-svc as a child process), a fresh Postgres
//! database per service and per reference, and a unique RabbitMQ prefix. `clio-load all
//! --smoke` runs every row at tiny sizes; the integration test `tests/smoke.rs` runs the
//! same through [`run`], so the test command exercises the tool.
//!
//! A row's error is a broken run (a failed job, a stored count that does not match); a
//! missed target is not, since shared machines drift.

pub mod audit;
pub mod concurrent_import;
pub mod import;
pub mod import_host;
pub mod lease;
pub mod markdown;
pub mod offboarding;
pub mod perf;
pub mod platform;
pub mod procstat;
pub mod rate_limited;
pub mod refresh_storm;
pub mod row;
pub mod script;

use std::time::Duration;

pub use concurrent_import::ConcurrentOptions;
pub use import::ImportOptions;
pub use import_host::ImportHost;
pub use lease::LeaseOptions;
pub use rate_limited::RateOptions;
pub use refresh_storm::StormOptions;
pub use row::{Row, Target};

/// The rows, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    Import,
    ConcurrentImport,
    Lease,
    RefreshStorm,
    AuditRecord,
    AuditVerify,
    RateLimited,
    Offboarding,
}

impl Bench {
    pub const ALL: [Bench; 8] = [
        Bench::Import,
        Bench::ConcurrentImport,
        Bench::Lease,
        Bench::RefreshStorm,
        Bench::AuditRecord,
        Bench::AuditVerify,
        Bench::RateLimited,
        Bench::Offboarding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bench::Import => "import",
            Bench::ConcurrentImport => "concurrent-import",
            Bench::Lease => "lease",
            Bench::RefreshStorm => "refresh-storm",
            Bench::AuditRecord => "audit-record",
            Bench::AuditVerify => "audit-verify",
            Bench::RateLimited => "rate-limited",
            Bench::Offboarding => "offboarding",
        }
    }
}

/// The sizes of every row.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub import: ImportOptions,
    pub concurrent: ConcurrentOptions,
    pub lease: LeaseOptions,
    pub storm: StormOptions,
    pub audit_record_events: usize,
    pub audit_verify_events: usize,
    pub rate: RateOptions,
    /// Connections of the person `OffboardUser` offboards.
    pub offboarding_connections: usize,
}

impl Sizes {
    /// The sizes: 200,000 contacts (the naive script over 20,000 of them); 20
    /// concurrent jobs of 50,000 contacts each; 200 lease callers for 5 s; 10,000
    /// connections expiring at once, leased by 200 callers; 200,000 audit events
    /// recorded, a 1,000,000-event chain verified; rate-limited imports of 1 and 20 tokens
    /// at Clio's 50 requests per 60 s; a person with 100 connections offboarded.
    pub fn full(host: ImportHost) -> Sizes {
        Sizes {
            rate: RateOptions {
                limit: 50,
                // Clio's window: its reset is announced in whole seconds, so a shorter
                // window would measure that rounding rather than the pacing.
                window: Duration::from_secs(60),
                windows: 2,
                page_size: 200,
                tokens: vec![1, 20],
                host: host.clone(),
            },
            concurrent: ConcurrentOptions {
                jobs: 20,
                records_per_job: 50_000,
                host: host.clone(),
            },
            import: ImportOptions {
                records: 200_000,
                naive_records: 20_000,
                host,
                perf_data: None,
            },
            lease: LeaseOptions {
                callers: 200,
                duration: Duration::from_secs(5),
                warmup: Duration::from_secs(1),
            },
            storm: StormOptions {
                connections: 10_000,
                callers: 200,
            },
            audit_record_events: 200_000,
            audit_verify_events: 1_000_000,
            offboarding_connections: 100,
        }
    }

    /// Tiny sizes that prove every row works, in well under a minute.
    pub fn smoke(host: ImportHost) -> Sizes {
        Sizes {
            rate: RateOptions {
                limit: 10,
                window: Duration::from_secs(1),
                windows: 2,
                page_size: 20,
                tokens: vec![1, 4],
                host: host.clone(),
            },
            concurrent: ConcurrentOptions {
                jobs: 3,
                records_per_job: 500,
                host: host.clone(),
            },
            import: ImportOptions {
                records: 2_000,
                naive_records: 2_000,
                host,
                perf_data: None,
            },
            lease: LeaseOptions {
                callers: 200,
                duration: Duration::from_millis(1_000),
                warmup: Duration::from_millis(200),
            },
            storm: StormOptions {
                connections: 50,
                callers: 200,
            },
            audit_record_events: 2_000,
            audit_verify_events: 10_000,
            offboarding_connections: 5,
        }
    }
}

/// What a run of several rows produced: every row that ran, and the benches that broke.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Where the import's time went (see [`import::ImportReport::time_split`]).
    pub time_split: Vec<String>,
    pub broken: Vec<(Bench, anyhow::Error)>,
}

/// Runs `benches` in order; a broken one is recorded and the others still run.
pub async fn run(benches: &[Bench], sizes: &Sizes) -> Outcome {
    let mut outcome = Outcome::default();
    for &bench in benches {
        eprintln!("clio-load: {} …", bench.name());
        settle().await;
        match run_one(bench, sizes).await {
            Ok((rows, split)) => {
                outcome.rows.extend(rows);
                outcome.time_split.extend(split);
            }
            Err(error) => {
                eprintln!("clio-load: {} broke: {error:#}", bench.name());
                outcome.broken.push((bench, error));
            }
        }
    }
    outcome
}

/// Writes out what earlier rows left dirty in Postgres' buffers (their rows, and the
/// databases they dropped), so that checkpoint's I/O does not land inside the next row's
/// measurement, where every commit would wait behind it. Best effort: a row measured
/// without it is still correct, only noisier.
async fn settle() {
    use sqlx::Connection;
    match sqlx::PgConnection::connect(&harness::postgres_admin_url()).await {
        Ok(mut admin) => {
            if let Err(error) = sqlx::query("CHECKPOINT").execute(&mut admin).await {
                eprintln!("clio-load: CHECKPOINT before the row failed: {error}");
            }
        }
        Err(error) => eprintln!("clio-load: cannot reach Postgres to settle it: {error}"),
    }
}

async fn run_one(bench: Bench, sizes: &Sizes) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    Ok(match bench {
        Bench::Import => {
            let report = import::run(&sizes.import).await?;
            (report.rows, report.time_split)
        }
        Bench::ConcurrentImport => {
            let report = concurrent_import::run(&sizes.concurrent).await?;
            (report.rows, report.time_split)
        }
        Bench::Lease => (lease::run(&sizes.lease).await?.rows, Vec::new()),
        Bench::RefreshStorm => (refresh_storm::run(&sizes.storm).await?.rows, Vec::new()),
        Bench::AuditRecord => (
            vec![audit::record(sizes.audit_record_events).await?],
            Vec::new(),
        ),
        Bench::AuditVerify => (
            vec![audit::verify_chain(sizes.audit_verify_events).await?],
            Vec::new(),
        ),
        Bench::RateLimited => (rate_limited::run(&sizes.rate).await?, Vec::new()),
        Bench::Offboarding => (
            vec![offboarding::run(sizes.offboarding_connections).await?],
            Vec::new(),
        ),
    })
}
