//! `clioctl import ...`: submit, follow, cancel and list import jobs, and read the records
//! they stored.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use proto::imports::v1 as import;
use serde_json::{Value, json};

use crate::clients::{Clients, Role};
use crate::exit::{Failure, code};
use crate::output::{self, Format, Table};
use crate::paging::PageArgs;

/// Who may follow and list jobs, in the order clioctl looks for a configured token.
const JOB_READERS: [Role; 3] = [Role::JobSubmitter, Role::Operator, Role::Compliance];
/// Who may submit and cancel jobs.
const JOB_WRITERS: [Role; 2] = [Role::JobSubmitter, Role::Operator];
/// At most one progress line per this long (a status change is shown at once).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Submit an import job and follow it to the end (exit 3 unless it COMPLETED).
    ///
    /// Needs tokens.job_submitter (or tokens.operator).
    #[command(after_help = "Examples:
  clioctl import submit --connection 3f2c... --resources contacts,matters
  clioctl import submit --connection 3f2c... --incremental --since 2026-01-01T00:00:00Z
  clioctl import submit --connection 3f2c... --filter matter_id=42 --detach")]
    Submit(SubmitArgs),
    /// Follow a job's progress until it ends (exit 3 unless it COMPLETED).
    ///
    /// Prints a line when the status changes and at most one progress line a second.
    #[command(after_help = "Example:\n  clioctl import watch 9b1e...")]
    Watch {
        /// The job id `import submit` printed.
        job: String,
    },
    /// Show one job: status, per-resource counts, failure reason.
    #[command(after_help = "Example:\n  clioctl import get 9b1e... --output json")]
    Get {
        /// The job id.
        job: String,
    },
    /// Stop a running job at its next page; a queued job never starts.
    #[command(after_help = "Example:\n  clioctl import cancel 9b1e... --reason \"wrong account\"")]
    Cancel {
        /// The job id.
        job: String,
        /// Why (recorded with the job).
        #[arg(long, default_value = "cancelled with clioctl")]
        reason: String,
    },
    /// List jobs, newest first.
    #[command(after_help = "Examples:
  clioctl import list --status failed
  clioctl import list --connection 3f2c... --all --output json")]
    List {
        /// Only this connection's jobs.
        #[arg(long)]
        connection: Option<String>,
        /// Only jobs in this status.
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// List imported records of one Clio account (needs tokens.data_reader).
    #[command(after_help = "Example:
  clioctl import records --account 1234 --resource contacts --page-size 20")]
    Records {
        #[command(flatten)]
        select: RecordSelection,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Stream every imported record of one resource as JSON lines, or CSV with
    /// `--output csv` (needs tokens.data_reader).
    #[command(after_help = "Example:
  clioctl import export --account 1234 --resource matters --out matters.jsonl")]
    Export {
        #[command(flatten)]
        select: RecordSelection,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct SubmitArgs {
    /// The connection whose Clio account to import (see `clioctl connection list`).
    #[arg(long)]
    connection: String,
    /// Resources to import: contacts, matters, calendar_entries, activities, users.
    #[arg(long, value_delimiter = ',', default_value = "contacts")]
    resources: Vec<String>,
    /// Only records changed since the last sync (or since --since).
    #[arg(long)]
    incremental: bool,
    /// With --incremental: records updated since this RFC 3339 time.
    #[arg(long, value_parser = output::parse_time, requires = "incremental")]
    since: Option<prost_types::Timestamp>,
    /// A Clio list filter, NAME=VALUE (repeatable), e.g. --filter status=open.
    #[arg(long = "filter", value_parser = parse_pair)]
    filters: Vec<(String, String)>,
    /// An idempotency key (UUID): submitting the same id twice runs the job once.
    #[arg(long)]
    job_id: Option<String>,
    /// Who asks for the import (recorded in the audit events).
    #[arg(long, default_value = "clioctl")]
    requested_by: String,
    /// Which waiting jobs start first: a person waiting (interactive), a periodic sync
    /// (scheduled), a bulk migration (backfill).
    #[arg(long, value_enum, default_value = "interactive")]
    priority: Priority,
    /// Print the job id and return without following the job.
    #[arg(long)]
    detach: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Priority {
    Interactive,
    Scheduled,
    Backfill,
}

impl From<Priority> for import::JobPriority {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::Interactive => import::JobPriority::Interactive,
            Priority::Scheduled => import::JobPriority::Scheduled,
            Priority::Backfill => import::JobPriority::Backfill,
        }
    }
}

#[derive(Args)]
pub struct RecordSelection {
    /// The Clio account id (a job shows it as clio_account_id).
    #[arg(long)]
    account: String,
    /// contacts, matters, calendar_entries, activities or users.
    #[arg(long)]
    resource: String,
    /// Only records updated since this RFC 3339 time.
    #[arg(long, value_parser = output::parse_time)]
    since: Option<prost_types::Timestamp>,
    /// Include records deleted in Clio.
    #[arg(long)]
    include_deleted: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Status {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    DeadLettered,
}

impl From<Status> for import::JobStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Queued => import::JobStatus::Queued,
            Status::Running => import::JobStatus::Running,
            Status::Completed => import::JobStatus::Completed,
            Status::Failed => import::JobStatus::Failed,
            Status::Cancelled => import::JobStatus::Cancelled,
            Status::DeadLettered => import::JobStatus::DeadLettered,
        }
    }
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

pub async fn run(clients: &Clients, format: Format, command: ImportCommand) -> anyhow::Result<()> {
    match command {
        ImportCommand::Submit(args) => submit(clients, format, args).await,
        ImportCommand::Watch { job } => {
            let job = watch(clients, format, &job).await?;
            succeeded(&job)
        }
        ImportCommand::Get { job } => {
            let (mut client, target) = clients.import(&JOB_READERS)?;
            let job = target
                .call(
                    "GetJob",
                    client.get_job(import::GetJobRequest { job_id: job }),
                )
                .await?;
            job_view(&job, format).print_one(format)
        }
        ImportCommand::Cancel { job, reason } => {
            let (mut client, target) = clients.import(&JOB_WRITERS)?;
            let job = target
                .call(
                    "CancelJob",
                    client.cancel_job(import::CancelJobRequest {
                        job_id: job,
                        reason,
                    }),
                )
                .await?;
            job_view(&job, format).print_one(format)
        }
        ImportCommand::List {
            connection,
            status,
            page,
        } => list(clients, format, connection, status, page).await,
        ImportCommand::Records { select, page } => {
            records::records(clients, format, select, page).await
        }
        ImportCommand::Export { select, out } => {
            records::export(clients, format, select, out).await
        }
    }
}

async fn submit(clients: &Clients, format: Format, args: SubmitArgs) -> anyhow::Result<()> {
    let mode = if args.incremental {
        import::ImportMode::Incremental
    } else {
        import::ImportMode::Full
    };
    let job = import::ImportJob {
        job_id: args.job_id.unwrap_or_default(),
        connection_id: args.connection,
        resources: args.resources,
        mode: mode as i32,
        updated_since: args.since,
        filters: args.filters.into_iter().collect(),
        requested_by: args.requested_by,
        priority: import::JobPriority::from(args.priority) as i32,
        ..Default::default()
    };
    let job_id = submit_job(clients, job).await?;
    if args.detach {
        return match format {
            Format::Json => {
                println!("{}", json!({ "job_id": job_id }));
                Ok(())
            }
            Format::Csv => {
                println!("job_id\n{job_id}");
                Ok(())
            }
            Format::Table => {
                println!("submitted job {job_id}");
                Ok(())
            }
        };
    }
    progress_line(format, &format!("submitted job {job_id}"));
    let job = watch(clients, format, &job_id).await?;
    succeeded(&job)
}

/// Submits `job` and returns its id.
pub async fn submit_job(clients: &Clients, job: import::ImportJob) -> anyhow::Result<String> {
    let (mut client, target) = clients.import(&JOB_WRITERS)?;
    let submitted = target
        .call(
            "SubmitJob",
            client.submit_job(import::SubmitJobRequest { job: Some(job) }),
        )
        .await?;
    Ok(submitted.job_id)
}

/// `Ok` for a COMPLETED job, else the bad-outcome exit naming the status and reason.
pub fn succeeded(job: &import::Job) -> anyhow::Result<()> {
    if job.status == import::JobStatus::Completed as i32 {
        return Ok(());
    }
    let reason = if job.failure_reason.is_empty() {
        String::new()
    } else {
        format!(": {}", job.failure_reason)
    };
    Err(Failure::new(
        code::BAD_OUTCOME,
        format!(
            "job {} ended {}{reason}",
            job.job_id,
            output::job_status(job.status).to_uppercase()
        ),
    )
    .into())
}

/// Progress goes to standard output for people, to standard error when standard output
/// carries JSON or CSV.
fn progress_line(format: Format, line: &str) {
    if format == Format::Table {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Follows the job until it ends, printing a line when the status changes and at most one
/// progress line a second; then prints the job. Returns its final state.
pub async fn watch(clients: &Clients, format: Format, job_id: &str) -> anyhow::Result<import::Job> {
    let (mut client, target) = clients.import(&JOB_READERS)?;
    let mut stream = target
        .call(
            "WatchJob",
            client.watch_job(import::WatchJobRequest {
                job_id: job_id.to_owned(),
            }),
        )
        .await?;
    let mut last: Option<import::Job> = None;
    let mut shown_status = None;
    let mut shown_line = String::new();
    let mut shown_at: Option<Instant> = None;
    loop {
        let progress = match stream.message().await {
            Ok(Some(progress)) => progress,
            Ok(None) => break,
            Err(status) => return Err(target.explain("WatchJob", &status)),
        };
        let Some(job) = progress.job else { continue };
        let fetched: u64 = job.progress.iter().map(|p| p.records_fetched).sum();
        let status = output::job_status(job.status);
        let line = match import::job_progress::Kind::try_from(progress.kind) {
            Ok(import::job_progress::Kind::RateLimitWait) => format!(
                "  {status}: {fetched} records fetched, waiting {} ms for Clio's rate limit",
                progress.wait_ms
            ),
            Ok(import::job_progress::Kind::Page) if progress.eta_seconds > 0 => format!(
                "  {status}: {fetched} records fetched, {:.0} records/s, eta {} s",
                progress.records_per_second, progress.eta_seconds
            ),
            Ok(import::job_progress::Kind::Page) => format!(
                "  {status}: {fetched} records fetched, {:.0} records/s",
                progress.records_per_second
            ),
            _ => format!("  {status} ({fetched} records fetched)"),
        };
        let status_changed = shown_status != Some(job.status);
        let due = shown_at.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if status_changed || (due && line != shown_line) {
            progress_line(format, &line);
            shown_status = Some(job.status);
            shown_line = line;
            shown_at = Some(Instant::now());
        }
        last = Some(job);
    }
    let job = last.ok_or_else(|| {
        Failure::new(
            code::FAILED,
            format!("the watch of job {job_id} ended without any state"),
        )
    })?;
    match format {
        Format::Table => {
            for resource in &job.progress {
                println!(
                    "  {}: {} pages, {} fetched, {} written, {} deleted, {} skipped",
                    resource.resource,
                    resource.pages,
                    resource.records_fetched,
                    resource.records_written,
                    resource.records_deleted,
                    resource.records_skipped
                );
            }
            if !job.failure_reason.is_empty() {
                println!("  reason: {}", job.failure_reason);
            }
        }
        Format::Json | Format::Csv => job_view(&job, format).print_one(format)?,
    }
    Ok(job)
}

const JOB_COLUMNS: [&str; 12] = [
    "job_id",
    "status",
    "connection_id",
    "resources",
    "mode",
    "records_fetched",
    "records_written",
    "attempts",
    "requested_by",
    "created_at",
    "finished_at",
    "failure_reason",
];

fn job_cells(job: &import::Job) -> Vec<Value> {
    let mode = output::enum_text(
        import::ImportMode::try_from(job.mode)
            .ok()
            .map(|m| m.as_str_name()),
        "IMPORT_MODE_",
    );
    vec![
        json!(job.job_id),
        json!(output::job_status(job.status)),
        json!(job.connection_id),
        output::strings(&job.resources),
        json!(mode),
        json!(job.progress.iter().map(|p| p.records_fetched).sum::<u64>()),
        json!(job.progress.iter().map(|p| p.records_written).sum::<u64>()),
        json!(job.attempts),
        json!(job.requested_by),
        output::time(job.created_at.as_ref()),
        output::time(job.finished_at.as_ref()),
        json!(job.failure_reason),
    ]
}

/// One job with its per-resource progress (objects in JSON, a phrase a resource in a table
/// or CSV) and account.
fn job_view(job: &import::Job, format: Format) -> Table {
    let mut columns = JOB_COLUMNS.to_vec();
    columns.extend(["started_at", "clio_account_id", "priority", "progress"]);
    let mut table = Table::new(&columns);
    let mut cells = job_cells(job);
    let progress = job
        .progress
        .iter()
        .map(|p| match format {
            Format::Table | Format::Csv => json!(format!(
                "{}: {} pages, {} fetched, {} written, {} deleted, {} skipped{};",
                p.resource,
                p.pages,
                p.records_fetched,
                p.records_written,
                p.records_deleted,
                p.records_skipped,
                if p.done { "" } else { " (running)" }
            )),
            Format::Json => json!({
                "resource": p.resource,
                "pages": p.pages,
                "fetched": p.records_fetched,
                "written": p.records_written,
                "deleted": p.records_deleted,
                "skipped": p.records_skipped,
                "done": p.done,
            }),
        })
        .collect();
    cells.extend([
        output::time(job.started_at.as_ref()),
        json!(job.clio_account_id),
        json!(output::enum_text(
            import::JobPriority::try_from(job.priority)
                .ok()
                .map(|p| p.as_str_name()),
            "JOB_PRIORITY_",
        )),
        Value::Array(progress),
    ]);
    table.row(cells);
    table
}

async fn list(
    clients: &Clients,
    format: Format,
    connection: Option<String>,
    status: Option<Status>,
    page: PageArgs,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.import(&JOB_READERS)?;
    let mut table = Table::new(&JOB_COLUMNS);
    let mut token = page.first_token();
    loop {
        let answer = target
            .call(
                "ListJobs",
                client.list_jobs(import::ListJobsRequest {
                    connection_id: connection.clone().unwrap_or_default(),
                    status: status.map_or(0, |s| import::JobStatus::from(s) as i32),
                    page_size: page.size(),
                    page_token: token,
                }),
            )
            .await?;
        for job in &answer.jobs {
            table.row(job_cells(job));
        }
        match page.next(answer.next_page_token) {
            Some(next) => token = next,
            None => break,
        }
    }
    table.print(format)
}

mod records;

#[cfg(test)]
mod tests;
