//! Many unthrottled imports at once against `COPY` of the same rows (issue 16: "20
//! concurrent unthrottled jobs on 20 connections", target ≥ 60 % of `COPY`).
//!
//! Each job is its own connection of its own Clio account (the simulator's
//! `SimConfig::accounts`: a firm per account, so no two jobs write the same rows), all on
//! one import-svc with job slots, prefetch and pool raised to run them together. The
//! figure is every stored record over the time from the first `SubmitJob` to the last job
//! COMPLETED.
//!
//! The reference is the cheapest way Postgres takes those rows: exactly the rows import-svc
//! stored (exported per account with `COPY … TO STDOUT` once the jobs are done), copied
//! with `COPY … FROM STDIN` into a table of the same definition (columns and indexes of
//! import-svc's migrations 0003 + 0007) on a fresh database of the same Postgres, once on
//! as many connections as there were jobs (one account each, at once) and once on a single
//! connection; the faster is the reference. The CPU time of the Postgres backends during
//! `COPY` shows how close the machine is to its bound.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clio_sim::{DatasetSize, Region, SimConfig};
use futures_util::TryStreamExt;
use futures_util::future::try_join_all;
use harness::{ClioUser, TestDatabase};
use sqlx::{Connection, PgConnection};

use crate::import::{CpuSplit, Probe};
use crate::import_host::{ImportHost, ImportSvc, full_job, pool_for_jobs};
use crate::platform::Platform;
use crate::procstat;
use crate::row::{Row, Target};
use crate::script::CONTACTS_DDL;

#[derive(Debug, Clone)]
pub struct ConcurrentOptions {
    /// Jobs at once, each on its own connection of its own Clio account.
    pub jobs: usize,
    /// Contacts in every account, all imported by its job.
    pub records_per_job: u64,
    pub host: ImportHost,
}

/// Every column of import-svc's `contacts`, in the order both `COPY`s name them.
const COLUMNS: &str = "clio_account_id, clio_id, etag, updated_at, data, connection_id, \
                       seen_in_job, stored_at, deleted_at, seen_by";
/// `COPY` data goes to Postgres in pieces of this size, as a client streaming a file would.
const COPY_CHUNK: usize = 1 << 20;
/// Connections made at once while setting up.
const CONNECT_CONCURRENCY: usize = 8;

/// What the jobs did.
#[derive(Debug, Clone, Default)]
pub struct JobsRun {
    pub wall: Duration,
    pub fastest: Duration,
    pub slowest: Duration,
    pub stored: i64,
    pub accounts: i64,
    pub cpu: CpuSplit,
    pub host: String,
    /// The one-minute load average when the jobs were submitted.
    pub load_average: Option<f64>,
}

/// One `COPY` of every row.
#[derive(Debug, Clone, Default)]
pub struct CopyRun {
    pub connections: usize,
    pub wall: Duration,
    pub stored: i64,
    /// CPU time of the Postgres backends doing the `COPY`.
    pub postgres_cpu: Option<Duration>,
}

impl CopyRun {
    pub fn rate(&self) -> f64 {
        self.stored as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

pub struct ConcurrentReport {
    pub options: ConcurrentOptions,
    pub jobs: JobsRun,
    /// `COPY` on as many connections as jobs, one account each.
    pub copy_parallel: CopyRun,
    /// `COPY` of every account on one connection.
    pub copy_single: CopyRun,
    pub rows: Vec<Row>,
    pub time_split: Vec<String>,
}

impl ConcurrentReport {
    pub fn records(&self) -> u64 {
        self.options.records_per_job * self.options.jobs as u64
    }

    pub fn rate(&self) -> f64 {
        self.records() as f64 / self.jobs.wall.as_secs_f64().max(1e-9)
    }

    /// The faster `COPY`: the reference.
    pub fn copy(&self) -> &CopyRun {
        match self.copy_parallel.rate() >= self.copy_single.rate() {
            true => &self.copy_parallel,
            false => &self.copy_single,
        }
    }
}

fn sim_config(options: &ConcurrentOptions) -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        accounts: u32::try_from(options.jobs).unwrap_or(u32::MAX),
        dataset: DatasetSize {
            contacts: options.records_per_job,
            ..DatasetSize::default()
        },
        ..SimConfig::default()
    }
}

pub async fn run(options: &ConcurrentOptions) -> Result<ConcurrentReport> {
    let options = ConcurrentOptions {
        jobs: options.jobs.max(1),
        ..options.clone()
    };
    let platform = Platform::start(sim_config(&options)).await?;
    let measured = measure(&platform, &options).await;
    platform.stop().await?;
    let (jobs, exported) = measured?;
    // One database for both: creating and dropping one costs a second or two.
    let database = TestDatabase::create().await;
    let copy_parallel = copy_rows(&database, &exported, true).await?;
    let copy_single = copy_rows(&database, &exported, false).await?;
    drop(database);
    let mut report = ConcurrentReport {
        options,
        jobs,
        copy_parallel,
        copy_single,
        rows: Vec::new(),
        time_split: Vec::new(),
    };
    report.rows = rows(&report);
    report.time_split = time_split(&report);
    Ok(report)
}

/// The jobs, then the rows they stored as `COPY` text, one buffer per account.
async fn measure(
    platform: &Platform,
    options: &ConcurrentOptions,
) -> Result<(JobsRun, Vec<Vec<u8>>)> {
    let app = platform.approved_app(&["contacts:read"]).await;
    let people: Vec<(String, ClioUser)> = (0..options.jobs)
        .map(|i| {
            let account = u32::try_from(i + 1).unwrap_or(u32::MAX);
            (
                format!("importer-{account}@firm.example"),
                ClioUser { account, user: 1 },
            )
        })
        .collect();
    let connections = platform
        .connect_many(&app, &people, CONNECT_CONCURRENCY)
        .await?;
    let jobs = options.jobs;
    let import = ImportSvc::start(platform, &options.host, |config| {
        // Both bounds: the consumer holds at most `prefetch` jobs and runs at most
        // `max_concurrent_jobs` of them (the defaults, 4 slots and a prefetch of 16, would queue the rest).
        config.importer.max_concurrent_jobs = jobs;
        config.amqp.prefetch = u16::try_from(jobs).unwrap_or(u16::MAX);
        // The default pool (10) would leave 20 jobs queueing for a connection to write.
        config.service.database.max_connections = pool_for_jobs(jobs);
    })
    .await?;
    let measured = async {
        let run = run_jobs(&import, options, &connections).await?;
        let exported = export(&import.database).await?;
        anyhow::Ok((run, exported))
    }
    .await;
    import.stop().await?;
    measured
}

async fn run_jobs(
    import: &ImportSvc,
    options: &ConcurrentOptions,
    connections: &[String],
) -> Result<JobsRun> {
    let load_average = procstat::load_average();
    let probe = Probe::start(import.pid(), &import.database.name);
    let started = Instant::now();
    let mut jobs = Vec::with_capacity(connections.len());
    for connection in connections {
        jobs.push(import.submit(full_job(connection, &["contacts"])).await?);
    }
    let records = options.records_per_job * connections.len() as u64;
    // Generous: a tenth of the naive script's speed would still finish.
    let within = Duration::from_secs(120 + records / 150);
    let done = import.all_completed(&jobs, within).await?;
    let wall = started.elapsed();
    let (cpu, _) = probe.finish();
    let times: Vec<Duration> = done
        .iter()
        .map(|(_, finished)| finished.duration_since(started))
        .collect();
    let mut db = import.database.connect().await;
    let (stored, accounts): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT clio_account_id) FROM contacts WHERE deleted_at IS NULL",
    )
    .fetch_one(&mut db)
    .await?;
    if stored != records as i64 || accounts != connections.len() as i64 {
        bail!(
            "import-svc stored {stored} contacts of {accounts} accounts; expected {records} of {}",
            connections.len()
        );
    }
    Ok(JobsRun {
        wall,
        fastest: times.iter().copied().min().unwrap_or_default(),
        slowest: times.iter().copied().max().unwrap_or_default(),
        stored,
        accounts,
        cpu,
        host: options.host.describe(),
        load_average,
    })
}

/// Every stored contact as `COPY` text, one buffer per Clio account.
async fn export(database: &TestDatabase) -> Result<Vec<Vec<u8>>> {
    let mut db = database.connect().await;
    let accounts: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT clio_account_id FROM contacts ORDER BY 1")
            .fetch_all(&mut db)
            .await?;
    let mut buffers = Vec::with_capacity(accounts.len());
    for account in accounts {
        let literal = account.replace('\'', "''");
        let sql = format!(
            "COPY (SELECT {COLUMNS} FROM contacts WHERE clio_account_id = '{literal}') TO STDOUT"
        );
        let mut buffer = Vec::new();
        let mut stream = db.copy_out_raw(&sql).await?;
        while let Some(chunk) = stream.try_next().await? {
            buffer.extend_from_slice(&chunk);
        }
        buffers.push(buffer);
    }
    Ok(buffers)
}

/// `COPY` of every buffer into a new, empty table in `database`: on one connection per
/// buffer at once (`parallel`), or all on one connection. Connections are open before the
/// clock starts.
async fn copy_rows(
    database: &TestDatabase,
    buffers: &[Vec<u8>],
    parallel: bool,
) -> Result<CopyRun> {
    let mut db = database.connect().await;
    sqlx::raw_sql("DROP TABLE IF EXISTS contacts")
        .execute(&mut db)
        .await?;
    sqlx::raw_sql(CONTACTS_DDL).execute(&mut db).await?;
    let groups: Vec<Vec<&[u8]>> = match parallel {
        true => buffers.iter().map(|b| vec![b.as_slice()]).collect(),
        false => vec![buffers.iter().map(Vec::as_slice).collect()],
    };
    let mut connections = Vec::with_capacity(groups.len());
    for _ in &groups {
        connections.push(
            PgConnection::connect(&database.url)
                .await
                .context("connect for COPY")?,
        );
    }
    let cpu_before = procstat::postgres_backends_cpu(&database.name);
    let started = Instant::now();
    try_join_all(
        connections
            .iter_mut()
            .zip(&groups)
            .map(|(connection, group)| copy_in(connection, group)),
    )
    .await?;
    let wall = started.elapsed();
    let cpu_after = procstat::postgres_backends_cpu(&database.name);
    for connection in connections {
        connection.close().await?;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&mut db)
        .await?;
    let expected: usize = buffers.iter().map(|b| copied_rows(b)).sum();
    if stored != expected as i64 {
        bail!("COPY stored {stored} contacts of {expected}");
    }
    db.close().await?;
    Ok(CopyRun {
        connections: groups.len(),
        wall,
        stored,
        postgres_cpu: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after.saturating_sub(before)),
    })
}

async fn copy_in(connection: &mut PgConnection, buffers: &[&[u8]]) -> Result<u64> {
    let mut copy = connection
        .copy_in_raw(&format!("COPY contacts ({COLUMNS}) FROM STDIN"))
        .await?;
    for buffer in buffers {
        for chunk in buffer.chunks(COPY_CHUNK) {
            copy.send(chunk).await?;
        }
    }
    Ok(copy.finish().await?)
}

/// Rows in `COPY` text: one line each (newlines inside values are escaped as `\n`).
fn copied_rows(buffer: &[u8]) -> usize {
    buffer.iter().filter(|b| **b == b'\n').count()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "n/a".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn rows(report: &ConcurrentReport) -> Vec<Row> {
    let (jobs, n) = (report.options.jobs, report.options.records_per_job);
    let copy = report.copy();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let copy_name = match copy.connections {
        1 => "COPY of the same rows, one connection".to_owned(),
        c => format!("COPY of the same rows, {c} connections at once"),
    };
    let copy_load = |run: &CopyRun| {
        run.postgres_cpu.map_or_else(String::new, |cpu| {
            format!(
                ", its Postgres backends {:.2} s CPU ({:.2} of {cores} cores)",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() / run.wall.as_secs_f64().max(1e-9)
            )
        })
    };
    vec![
        Row::new(
            format!("{jobs} concurrent imports, {jobs} × {n} contacts on {jobs} connections"),
            report.rate(),
            "records/s",
        )
        .against(copy_name, copy.rate(), "records/s")
        .target(Target::RatioAtLeast { min: 0.6 })
        .command(format!(
            "cargo run --release -p load -- concurrent-import --jobs {jobs} --records-per-job {n}"
        ))
        .note(format!(
            "import-svc {} ran every job at once (own Clio account each): all done in {:.2} s, \
             first job {:.2} s; COPY on {} connections {:.2} s{}; COPY on one connection {:.2} \
             s{}; load average {} when the jobs began",
            report.jobs.host,
            report.jobs.wall.as_secs_f64(),
            report.jobs.fastest.as_secs_f64(),
            report.copy_parallel.connections,
            report.copy_parallel.wall.as_secs_f64(),
            copy_load(&report.copy_parallel),
            report.copy_single.wall.as_secs_f64(),
            copy_load(&report.copy_single),
            report
                .jobs
                .load_average
                .map_or_else(|| "n/a".to_owned(), |l| format!("{l:.1}")),
        ))
        .note(ceiling_note(report).unwrap_or_default())
        .note(
            "tried: every lever of the import row; the jobs' page writes share the pool's \
             spare connections (write slots) instead of one job taking them all; the \
             scheduler gives each connection its own slot, so the 20 jobs run at once",
        ),
    ]
}

/// What the machine allows: the jobs' rows come from the simulator through import-svc,
/// which share the database's cores, while `COPY` writes rows it already holds. Even if
/// import-svc's Postgres work cost exactly what `COPY`'s did, the source and the importer
/// would add their CPU on the same cores.
fn ceiling_note(report: &ConcurrentReport) -> Option<String> {
    let copy = report.copy().postgres_cpu?.as_secs_f64();
    let source = report.jobs.cpu.tool?.as_secs_f64() + report.jobs.cpu.import_svc?.as_secs_f64();
    Some(format!(
        "ceiling: even at COPY's Postgres cost ({copy:.1} s of CPU), the simulator, the other \
         services and import-svc ({source:.1} s) share the same cores, so the jobs could reach \
         at most {:.2}× of COPY here",
        copy / (copy + source).max(1e-9)
    ))
}

/// Where the concurrent jobs' CPU went, beside the `COPY`'s.
fn time_split(report: &ConcurrentReport) -> Vec<String> {
    let jobs = &report.jobs;
    let copy = report.copy();
    vec![format!(
        "{} concurrent imports ({}), {} records in {:.2} s wall: CPU of import-svc {}, of its \
         Postgres backends {}, of the rest of the tool (simulator, auth-svc, audit-svc, job \
         poller) {}; the reference COPY ({} connection(s)) {:.2} s wall, CPU of its Postgres \
         backends {}",
        report.options.jobs,
        jobs.host,
        report.records(),
        jobs.wall.as_secs_f64(),
        secs(jobs.cpu.import_svc),
        secs(jobs.cpu.postgres),
        secs(jobs.cpu.tool),
        copy.connections,
        copy.wall.as_secs_f64(),
        secs(copy.postgres_cpu),
    )]
}
