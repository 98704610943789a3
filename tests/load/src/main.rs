//! `clio-load`: the benchmark rows of issue 16 from the command line.
//!
//! `clio-load [--json] all [--smoke]` runs every row; `import`, `concurrent-import`,
//! `lease`, `refresh-storm`, `audit-record`, `audit-verify`, `rate-limited` and
//! `offboarding` run one. Sizes default to the (`--smoke`: tiny) and each
//! has a flag. The exit code is 1 only when a row broke (a failed job, a stored count that
//! does not match), never for a missed target.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use load::{Bench, ImportHost, Outcome, Sizes};

#[derive(Debug, Parser)]
#[command(
    name = "clio-load",
    version,
    about = "Benchmarks of clio-connect's hot paths, each beside its reference"
)]
struct Cli {
    /// Print the rows as JSON on stdout (the table goes to stderr)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every row, in priority order
    All(Sizing),
    /// import-svc against the competent and the naive script
    Import(Sizing),
    /// Concurrent jobs, one Clio account and connection each, against COPY of the same rows
    ConcurrentImport(Sizing),
    /// LeaseAccessToken against the health check under the same load
    Lease(Sizing),
    /// Every connection's token expiring at once, then leased by many callers
    RefreshStorm(Sizing),
    /// audit Record against plain INSERTs
    AuditRecord(Sizing),
    /// audit Verify against a plain scan
    AuditVerify(Sizing),
    /// Rate-limited imports (1 and 20 tokens) against the limit's bound
    RateLimited(Sizing),
    /// OffboardUser of a person with many connections
    Offboarding(Sizing),
    /// BENCHMARKS.md from the JSON of `--json all` (tests/load/report.sh)
    Render {
        /// The JSON `clio-load --json all` printed
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// `perf report` text of a profiled import, for "Where the time goes"
        #[arg(long, value_name = "FILE")]
        profile: Option<PathBuf>,
        /// The git revision measured
        #[arg(long, default_value = "")]
        revision: String,
        /// The command that regenerates the file
        #[arg(long, default_value = "tests/load/report.sh")]
        command: String,
        /// Conditions of the run, quoted under the title
        #[arg(long, default_value = "")]
        note: String,
    },
    /// import-svc itself, on this binary's copy of its code (how the import row runs it as
    /// a process of its own)
    #[command(hide = true)]
    ServeImportSvc {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct Sizing {
    /// Tiny sizes: proves every row works in well under a minute
    #[arg(long)]
    smoke: bool,
    /// Contacts to import (default 200000; smoke 2000)
    #[arg(long)]
    records: Option<u64>,
    /// Contacts the naive script stores (default 20000, at most --records; smoke 2000)
    #[arg(long)]
    naive_records: Option<u64>,
    /// Run import-svc in this process instead of as a child process
    #[arg(long, conflicts_with = "import_binary")]
    in_process: bool,
    /// Run this import-svc binary instead of this tool's own copy of import-svc
    #[arg(long, value_name = "PATH")]
    import_binary: Option<PathBuf>,
    /// Record a CPU profile of import-svc during the job into this file (`perf record`;
    /// not with --in-process)
    #[arg(long, value_name = "FILE", conflicts_with = "in_process")]
    perf_data: Option<PathBuf>,
    /// Concurrent import jobs, each its own connection of its own Clio account
    /// (concurrent-import; default 20; smoke 3)
    #[arg(long)]
    jobs: Option<usize>,
    /// Contacts each concurrent job imports (concurrent-import; default 50000; smoke 500)
    #[arg(long)]
    records_per_job: Option<u64>,
    /// Concurrent LeaseAccessToken callers of the lease row and the refresh storm
    /// (default 200)
    #[arg(long)]
    callers: Option<usize>,
    /// Seconds each lease load runs (default 5; smoke 1)
    #[arg(long)]
    seconds: Option<f64>,
    /// Events of the Record row (audit-record; default 200000), or of the chain the
    /// Verify row reads (audit-verify; default 1000000)
    #[arg(long)]
    events: Option<usize>,
    /// Requests per window per token of the rate-limited rows (default 50; smoke 10)
    #[arg(long)]
    limit: Option<u32>,
    /// The rate limit's window in seconds (default 60, Clio's; smoke 1)
    #[arg(long)]
    window_secs: Option<f64>,
    /// Token counts of the rate-limited rows, one row each (default 1,20; smoke 1,4)
    #[arg(long, value_delimiter = ',')]
    tokens: Option<Vec<usize>>,
    /// Connections of the offboarded person (offboarding; default 100; smoke 5), or
    /// connections expiring at once (refresh-storm; default 10000; smoke 50)
    #[arg(long)]
    connections: Option<usize>,
    /// Connections expiring at once when running `all` (default 10000; smoke 50)
    #[arg(long)]
    storm_connections: Option<usize>,
    /// Events of the Record row when running `all` (default 200000; smoke 2000)
    #[arg(long)]
    record_events: Option<usize>,
    /// Events of the Verify row's chain when running `all` (default 1000000; smoke 10000)
    #[arg(long)]
    verify_events: Option<usize>,
}

impl Sizing {
    fn host(&self) -> ImportHost {
        if self.in_process {
            return ImportHost::InProcess;
        }
        if let Some(program) = &self.import_binary {
            return ImportHost::Process {
                program: program.clone(),
                args: Vec::new(),
            };
        }
        match std::env::current_exe() {
            Ok(program) => ImportHost::Process {
                program,
                args: vec!["serve-import-svc".into()],
            },
            Err(_) => ImportHost::InProcess,
        }
    }

    fn sizes(&self, bench: Option<Bench>) -> Sizes {
        let host = self.host();
        let mut sizes = match self.smoke {
            true => Sizes::smoke(host),
            false => Sizes::full(host),
        };
        if let Some(records) = self.records {
            sizes.import.records = records;
        }
        sizes.import.perf_data = self.perf_data.clone();
        sizes.import.naive_records = self
            .naive_records
            .unwrap_or(sizes.import.naive_records)
            .min(sizes.import.records);
        if let Some(callers) = self.callers {
            sizes.lease.callers = callers.max(1);
            sizes.storm.callers = callers.max(1);
        }
        if let Some(jobs) = self.jobs {
            sizes.concurrent.jobs = jobs.max(1);
        }
        if let Some(records) = self.records_per_job {
            sizes.concurrent.records_per_job = records.max(1);
        }
        if let Some(seconds) = self.seconds {
            sizes.lease.duration = Duration::from_secs_f64(seconds.max(0.1));
        }
        if let Some(connections) = self.storm_connections {
            sizes.storm.connections = connections.max(1);
        }
        match (bench, self.connections) {
            (Some(Bench::RefreshStorm), Some(connections)) => {
                sizes.storm.connections = connections.max(1);
            }
            (_, Some(connections)) => sizes.offboarding_connections = connections.max(1),
            _ => {}
        }
        if let Some(limit) = self.limit {
            sizes.rate.limit = limit.max(1);
        }
        if let Some(window) = self.window_secs {
            sizes.rate.window = Duration::from_secs_f64(window.max(0.1));
        }
        if let Some(tokens) = &self.tokens {
            sizes.rate.tokens = tokens.iter().map(|&t| t.max(1)).collect();
        }
        sizes.audit_record_events = self.record_events.unwrap_or(sizes.audit_record_events);
        sizes.audit_verify_events = self.verify_events.unwrap_or(sizes.audit_verify_events);
        match (bench, self.events) {
            (Some(Bench::AuditRecord), Some(events)) => sizes.audit_record_events = events,
            (Some(Bench::AuditVerify), Some(events)) => sizes.audit_verify_events = events,
            _ => {}
        }
        sizes
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (benches, sizing): (Vec<Bench>, &Sizing) = match &cli.command {
        Command::ServeImportSvc { config } => {
            return service_runtime::entrypoint::run_service(
                "import-svc",
                "IMPORT_SVC_",
                Some(config.as_path()),
                import_svc::run,
            );
        }
        Command::Render {
            input,
            profile,
            revision,
            command,
            note,
        } => return render(input, profile.as_deref(), revision, command, note),
        Command::All(sizing) => (Bench::ALL.to_vec(), sizing),
        Command::Import(sizing) => (vec![Bench::Import], sizing),
        Command::ConcurrentImport(sizing) => (vec![Bench::ConcurrentImport], sizing),
        Command::Lease(sizing) => (vec![Bench::Lease], sizing),
        Command::RefreshStorm(sizing) => (vec![Bench::RefreshStorm], sizing),
        Command::AuditRecord(sizing) => (vec![Bench::AuditRecord], sizing),
        Command::AuditVerify(sizing) => (vec![Bench::AuditVerify], sizing),
        Command::RateLimited(sizing) => (vec![Bench::RateLimited], sizing),
        Command::Offboarding(sizing) => (vec![Bench::Offboarding], sizing),
    };
    let sizes = sizing.sizes(benches.first().copied().filter(|_| benches.len() == 1));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("clio-load: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(load::run(&benches, &sizes));
    report(&outcome, cli.json)
}

fn report(outcome: &Outcome, json: bool) -> ExitCode {
    let table = load::row::table(&outcome.rows);
    if json {
        eprint!("{table}");
        let broken: Vec<serde_json::Value> = outcome
            .broken
            .iter()
            .map(|(bench, error)| {
                serde_json::json!({ "bench": bench.name(), "error": format!("{error:#}") })
            })
            .collect();
        let document = serde_json::json!({
            "rows": outcome.rows,
            "time_split": outcome.time_split,
            "broken": broken,
        });
        println!("{document:#}");
    } else {
        print!("{table}");
        for line in &outcome.time_split {
            println!("  {line}");
        }
    }
    for (bench, error) in &outcome.broken {
        eprintln!("clio-load: {} BROKE: {error:#}", bench.name());
    }
    match outcome.broken.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

fn render(
    input: &std::path::Path,
    profile: Option<&std::path::Path>,
    revision: &str,
    command: &str,
    note: &str,
) -> ExitCode {
    let document = std::fs::read_to_string(input)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(serde_json::from_str::<load::markdown::Document>(&text)?));
    let document = match document {
        Ok(document) => document,
        Err(error) => {
            eprintln!("clio-load: cannot read {}: {error:#}", input.display());
            return ExitCode::FAILURE;
        }
    };
    let provenance = load::markdown::Provenance {
        revision: revision.to_owned(),
        command: command.to_owned(),
        note: note.to_owned(),
        profile: profile.and_then(|p| std::fs::read_to_string(p).ok()),
    };
    print!("{}", load::markdown::render(&document, &provenance));
    ExitCode::SUCCESS
}
