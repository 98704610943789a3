//! The unthrottled import through the real path (a job submitted over gRPC → RabbitMQ →
//! import-svc → the Clio simulator → Postgres), against the competent and the naive script
//! over the same simulator and the same Postgres in the same run ([`crate::script`]).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use scope_catalog::Resource;

use crate::import_host::{ImportHost, ImportSvc, full_job};
use crate::platform::{Platform, unlimited_sim};
use crate::procstat;
use crate::row::{Row, Target};
use crate::script::{self, ScriptRun, Source, Style};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Contacts in the simulator, all imported by import-svc and the competent script.
    pub records: u64,
    /// How many of them the naive script stores (a record at a time is slow: at ~1,500/s a
    /// million takes ten minutes, and its rate does not depend on the count).
    pub naive_records: u64,
    pub host: ImportHost,
    /// Record a CPU profile of import-svc's process during the job here (`perf record`;
    /// import-svc as a child process only).
    pub perf_data: Option<std::path::PathBuf>,
}

/// CPU time spent during one contender's run, by process.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    /// import-svc's own process (`None` for the scripts, or import-svc in this process).
    pub import_svc: Option<Duration>,
    /// The Postgres backends serving the contender's database.
    pub postgres: Option<Duration>,
    /// This tool's process: the simulator, auth-svc, audit-svc, the job poller, and the
    /// script itself (or import-svc, in-process).
    pub tool: Option<Duration>,
}

/// Samples of the processes a contender's run uses, before and after.
pub(crate) struct Probe {
    pid: Option<u32>,
    database: String,
    process: Option<procstat::Sample>,
    postgres: Option<Duration>,
    tool: Option<procstat::Sample>,
}

impl Probe {
    pub(crate) fn start(pid: Option<u32>, database: &str) -> Probe {
        Probe {
            pid,
            database: database.to_owned(),
            process: pid.and_then(|pid| procstat::sample(Some(pid))),
            postgres: procstat::postgres_backends_cpu(database),
            tool: procstat::sample(None),
        }
    }

    /// The CPU each part used since [`Probe::start`], and the process's sample now.
    pub(crate) fn finish(&self) -> (CpuSplit, Option<procstat::Sample>) {
        let process = self.pid.and_then(|pid| procstat::sample(Some(pid)));
        let tool = procstat::sample(None);
        let postgres = procstat::postgres_backends_cpu(&self.database);
        let delta = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        let split = CpuSplit {
            import_svc: delta(self.process.map(|s| s.cpu), process.map(|s| s.cpu)),
            postgres: delta(self.postgres, postgres),
            tool: delta(self.tool.map(|s| s.cpu), tool.map(|s| s.cpu)),
        };
        (split, process.or(tool))
    }
}

/// What import-svc did with the job.
#[derive(Debug, Clone, Default)]
pub struct ServiceRun {
    pub wall: Duration,
    pub stored: i64,
    pub cpu: CpuSplit,
    /// Peak resident memory of import-svc's process (in-process: growth of the whole
    /// process during the job).
    pub rss_kib: Option<u64>,
    pub rss_before_kib: Option<u64>,
    pub host: String,
}

impl ServiceRun {
    pub fn rate(&self, records: u64) -> f64 {
        records as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPU of import-svc itself: its process, or (in-process) the whole tool's.
    pub fn import_cpu(&self) -> Option<Duration> {
        self.cpu.import_svc.or(self.cpu.tool)
    }
}

pub struct ImportReport {
    pub records: u64,
    pub naive_records: u64,
    pub service: ServiceRun,
    pub competent: ScriptRun,
    pub competent_cpu: CpuSplit,
    pub naive: ScriptRun,
    pub naive_cpu: CpuSplit,
    pub rows: Vec<Row>,
    /// Where each contender's time went, for the report's profile section.
    pub time_split: Vec<String>,
}

/// Starts a platform with `records` contacts and runs the three contenders on it.
pub async fn run(options: &ImportOptions) -> Result<ImportReport> {
    let platform = Platform::start(unlimited_sim(options.records)).await?;
    let measured = measure(&platform, options).await;
    platform.stop().await?;
    measured
}

async fn measure(platform: &Platform, options: &ImportOptions) -> Result<ImportReport> {
    let connection = platform
        .connect(&["contacts:read"], "load@firm.example", 1)
        .await?;
    let service = run_service(platform, options, &connection).await?;
    if service.stored != options.records as i64 {
        bail!(
            "import-svc stored {} contacts of {}",
            service.stored,
            options.records
        );
    }
    let source = script_source(platform, &connection).await?;
    let (competent, competent_cpu) = run_script(Style::Competent, &source, options.records).await?;
    let (naive, naive_cpu) = run_script(Style::Naive, &source, options.naive_records).await?;
    let mut report = ImportReport {
        records: options.records,
        naive_records: options.naive_records,
        service,
        competent,
        competent_cpu,
        naive,
        naive_cpu,
        rows: Vec::new(),
        time_split: Vec::new(),
    };
    report.rows = rows(&report);
    report.time_split = time_split(&report);
    Ok(report)
}

/// One full job of every contact, from `SubmitJob` until `GetJob` says COMPLETED.
async fn run_service(
    platform: &Platform,
    options: &ImportOptions,
    connection: &str,
) -> Result<ServiceRun> {
    let import = ImportSvc::start(platform, &options.host, |_| {}).await?;
    let measured = async {
        let idle = procstat::sample(import.pid());
        let perf = match (&options.perf_data, import.pid()) {
            (Some(path), Some(pid)) => Some(crate::perf::Recorder::start(pid, path).await?),
            _ => None,
        };
        let probe = Probe::start(import.pid(), &import.database.name);
        let started = Instant::now();
        let job = import.submit(full_job(connection, &["contacts"])).await?;
        // Generous: a tenth of the naive script's speed would still finish.
        let within = Duration::from_secs(120 + options.records / 150);
        import.completed(&job, within).await?;
        let wall = started.elapsed();
        let (cpu, after) = probe.finish();
        if let Some(perf) = perf {
            perf.stop().await?;
        }
        let stored = import.stored("contacts").await?;
        let rss_kib = match (import.pid(), idle, after) {
            (Some(_), _, Some(after)) => Some(after.peak_rss_kib),
            (None, Some(idle), Some(after)) => Some(after.rss_kib.saturating_sub(idle.rss_kib)),
            _ => None,
        };
        anyhow::Ok(ServiceRun {
            wall,
            stored,
            cpu,
            rss_kib,
            rss_before_kib: idle.map(|b| b.rss_kib),
            host: options.host.describe(),
        })
    }
    .await;
    import.stop().await?;
    measured
}

/// The scripts' token (leased from auth-svc, as any client of the platform would get one)
/// and their first page: the fields and page size import-svc asks for.
async fn script_source(platform: &Platform, connection: &str) -> Result<Source> {
    let lease = platform.lease(connection, &["contacts:read"]).await?;
    let base = lease.api_base_url.trim_end_matches('/');
    let base = match base.ends_with("/api/v4") {
        true => base.to_owned(),
        false => format!("{base}/api/v4"),
    };
    let mut url = reqwest::Url::parse(&format!("{base}/contacts.json"))?;
    url.query_pairs_mut()
        .append_pair(
            "fields",
            &import_svc::job::listing::fields_param(Resource::Contacts, &[]),
        )
        .append_pair("limit", "200");
    Ok(Source {
        first_page: url.to_string(),
        access_token: lease.access_token,
    })
}

/// A script on a fresh database of the same Postgres; an error unless it stored `limit`.
async fn run_script(style: Style, source: &Source, limit: u64) -> Result<(ScriptRun, CpuSplit)> {
    let database = harness::TestDatabase::create().await;
    let pool = script::prepare(&database.url).await?;
    let probe = Probe::start(None, &database.name);
    let run = script::run(style, source, &pool, limit).await;
    let (cpu, _) = probe.finish();
    pool.close().await;
    let run = run?;
    if run.stored != limit as i64 {
        bail!(
            "the {style:?} script stored {} contacts of {limit}",
            run.stored
        );
    }
    Ok((run, cpu))
}

fn rows(report: &ImportReport) -> Vec<Row> {
    let n = report.records;
    let service = report.service.rate(n);
    let command = format!(
        "cargo run --release -p load -- import --records {n} --naive-records {}",
        report.naive_records
    );
    let path = format!("import, {n} contacts, queue → sim → Postgres");
    let split = |run: &ScriptRun| {
        format!(
            "{:.0}% Clio (HTTP + JSON), {:.0}% Postgres",
            100.0 * run.clio.as_secs_f64() / run.wall.as_secs_f64().max(1e-9),
            100.0 * run.postgres.as_secs_f64() / run.wall.as_secs_f64().max(1e-9),
        )
    };
    let mut competent = Row::new(path.clone(), service, "records/s")
        .against("competent script", report.competent.rate(), "records/s")
        .target(Target::RatioAtLeast { min: 3.0 })
        .command(command.clone())
        .note(format!(
            "import-svc {} in {:.2} s; competent script {:.2} s, its time {}",
            report.service.host,
            report.service.wall.as_secs_f64(),
            report.competent.wall.as_secs_f64(),
            split(&report.competent)
        ));
    if let Some(ceiling) = ceiling_note(report, 3.0) {
        competent = competent.note(ceiling);
    }
    competent = competent.note(
        "tried: page N+1 fetched while page N is written; up to three pages of a listing \
         written at once, each on its own connection, committing in order, bounded by the \
         pool's write slots; page transactions committed without waiting for the WAL flush \
         (the job's end stays synchronous); one UNNEST upsert a page with the checkpoint in \
         the same transaction; progress events at most every 250 ms; records kept as \
         borrowed raw JSON until checked. Measured apart (`psql -f tests/load/upsert_cost.sql`, \
         1,000 pages of 200 contacts inside Postgres, no client, 6 runs, session 11): \
         import-svc's upsert costs 1.2 to 1.4 times the script's, the price of deletion \
         detection (`seen_by`) and of counting only the records a page really changed (without \
         the count, 1.0 to 1.2)",
    );
    let mut rows = vec![
        competent,
        Row::new(path, service, "records/s")
            .against("naive script", report.naive.rate(), "records/s")
            .target(Target::RatioAtLeast { min: 25.0 })
            .command(command.clone())
            .note(format!(
                "naive script over the first {} contacts in {:.2} s, its time {}",
                report.naive_records,
                report.naive.wall.as_secs_f64(),
                split(&report.naive)
            )),
    ];
    rows.extend(process_rows(report, &command));
    rows
}

/// What `ratio` × the competent script would ask of this machine, from the run's own CPU
/// figures: every process (simulator, services, Postgres, import-svc) shares the cores, so
/// their CPU per record together bounds the rate.
fn ceiling_note(report: &ImportReport, ratio: f64) -> Option<String> {
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / report.records.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let rate = ratio * report.competent.rate();
    let budget = cores * 1e6 / rate.max(1e-9);
    let others = per_record(report.service.cpu.tool?);
    let script_postgres =
        report.competent_cpu.postgres?.as_secs_f64() * 1e6 / report.competent.records.max(1) as f64;
    let import_svc = per_record(report.service.cpu.import_svc?);
    let postgres = per_record(report.service.cpu.postgres?);
    let floor = others + script_postgres;
    Some(format!(
        "ceiling: {ratio}× the competent script is {rate:.0} records/s, so on {cores} cores \
         every process together may spend {budget:.1} µs of CPU a record; the simulator and \
         the other services took {others:.1}, import-svc {import_svc:.1} and its Postgres \
         backends {postgres:.1} (the competent script's one upsert and commit a page cost its \
         Postgres {script_postgres:.1}); limit: serving the records and storing them as \
         cheaply as the script does already take {floor:.1} µs a record, {}",
        match floor >= budget {
            true => "more than the whole budget before import-svc reads a byte".to_owned(),
            false => format!(
                "leaving {:.1} for import-svc and its extra Postgres work",
                budget - floor
            ),
        }
    ))
}

/// import-svc's memory and CPU per record, when they could be read.
fn process_rows(report: &ImportReport, command: &str) -> Vec<Row> {
    let in_process = report.service.host == ImportHost::InProcess.describe();
    let mut rows = Vec::new();
    if let Some(rss) = report.service.rss_kib {
        let (what, note) = match in_process {
            true => (
                "import-svc RSS (growth of the whole process during the job)",
                "in-process: includes the simulator, auth-svc and audit-svc",
            ),
            false => ("import-svc peak RSS (VmHWM)", "its own process"),
        };
        let mut row = Row::new(what, rss as f64 / 1024.0, "MiB")
            .target(Target::FigureBelow { max: 150.0 })
            .command(command.to_owned())
            .note(note);
        if let Some(before) = report.service.rss_before_kib.filter(|_| !in_process) {
            row = row.against("idle, before the job", before as f64 / 1024.0, "MiB");
        }
        rows.push(row);
    }
    if let Some(cpu) = report.service.import_cpu() {
        let per_record = cpu.as_secs_f64() * 1e6 / report.records.max(1) as f64;
        let note = match in_process {
            true => "in-process: the CPU of the whole process, simulator included",
            false => "user + system time of import-svc's process during the job",
        };
        rows.push(
            Row::new("import-svc CPU per record", per_record, "µs/record")
                .target(Target::FigureAtMost { max: 20.0 })
                .command(command.to_owned())
                .note(note),
        );
    }
    rows
}

/// Where each contender's CPU and wall time went, one line each.
fn time_split(report: &ImportReport) -> Vec<String> {
    let secs = |d: Option<Duration>| {
        d.map_or_else(|| "n/a".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    let service = &report.service;
    let mut lines = vec![format!(
        "import-svc ({}), {} records in {:.2} s wall: CPU of import-svc {}, of its Postgres \
         backends {}, of the rest of the tool (simulator, auth-svc, audit-svc, job poller) {}",
        service.host,
        report.records,
        service.wall.as_secs_f64(),
        secs(service.cpu.import_svc),
        secs(service.cpu.postgres),
        secs(service.cpu.tool),
    )];
    for (name, run, cpu) in [
        ("competent script", &report.competent, &report.competent_cpu),
        ("naive script", &report.naive, &report.naive_cpu),
    ] {
        lines.push(format!(
            "{name}, {} records in {:.2} s wall: waiting for Clio (HTTP + JSON parse) {:.2} s, \
             in Postgres (write + commit) {:.2} s; CPU of its Postgres backend {}, of the tool \
             (simulator + script) {}",
            run.records,
            run.wall.as_secs_f64(),
            run.clio.as_secs_f64(),
            run.postgres.as_secs_f64(),
            secs(cpu.postgres),
            secs(cpu.tool),
        ));
    }
    lines
}
