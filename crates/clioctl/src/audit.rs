//! `clioctl audit ...`: query, follow, verify and export a tenant's audit record. Every
//! command needs tokens.compliance.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use proto::audit::v1 as audit;
use proto::common::v1 as common;
use serde_json::{Value, json};

use crate::clients::{Clients, Target};
use crate::exit::{Failure, code};
use crate::output::{self, Format, Table};
use crate::paging::PageArgs;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Search a tenant's events, oldest first.
    #[command(after_help = "Examples:
  clioctl audit query --tenant firm-1 --kind connection_revoked --kind user_offboarded
  clioctl audit query --tenant firm-1 --connection 3f2c... --from 2026-01-01T00:00:00Z --all")]
    Query {
        #[arg(long)]
        tenant: String,
        /// Event kind, e.g. connection_granted, import_failed, access_denied (repeatable).
        #[arg(long = "kind", value_parser = parse_kind)]
        kinds: Vec<common::EventKind>,
        /// Only events about this connection.
        #[arg(long, conflicts_with = "job")]
        connection: Option<String>,
        /// Only events about this import job.
        #[arg(long)]
        job: Option<String>,
        /// Only events by this actor (a person or a service credential).
        #[arg(long)]
        actor: Option<String>,
        /// From this RFC 3339 time (inclusive).
        #[arg(long, value_parser = output::parse_time)]
        from: Option<prost_types::Timestamp>,
        /// Before this RFC 3339 time.
        #[arg(long, value_parser = output::parse_time)]
        to: Option<prost_types::Timestamp>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Print new events as they are recorded (Ctrl-C stops).
    #[command(after_help = "Example:\n  clioctl audit watch --tenant firm-1 --kind access_denied")]
    Watch {
        #[arg(long)]
        tenant: String,
        /// Start after this sequence number (0: from the first event).
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long = "kind", value_parser = parse_kind)]
        kinds: Vec<common::EventKind>,
    },
    /// Recompute the hash chain and check the signed checkpoints (exit 3 when broken).
    #[command(after_help = "Example:\n  clioctl audit verify --tenant firm-1")]
    Verify {
        #[arg(long)]
        tenant: String,
        /// First sequence to check (0: the first).
        #[arg(long, default_value_t = 0)]
        from_sequence: u64,
        /// Last sequence to check (0: the last).
        #[arg(long, default_value_t = 0)]
        to_sequence: u64,
    },
    /// Export the chain as JSON lines (header, events with hashes, checkpoints),
    /// verifiable offline.
    #[command(
        after_help = "Example:\n  clioctl audit export --tenant firm-1 --out firm-1-audit.jsonl"
    )]
    Export {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 0)]
        from_sequence: u64,
        #[arg(long, default_value_t = 0)]
        to_sequence: u64,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_kind(text: &str) -> Result<common::EventKind, String> {
    let name = format!("EVENT_KIND_{}", text.to_ascii_uppercase().replace('-', "_"));
    common::EventKind::from_str_name(&name).ok_or_else(|| {
        format!(
            "unknown event kind {text:?} (e.g. connection_granted, import_failed, access_denied)"
        )
    })
}

pub async fn run(clients: &Clients, format: Format, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Query {
            tenant,
            kinds,
            connection,
            job,
            actor,
            from,
            to,
            page,
        } => {
            let filter = audit::QueryRequest {
                tenant,
                kinds: kinds.iter().map(|k| *k as i32).collect(),
                subject: query_subject(connection, job),
                actor_id: actor.unwrap_or_default(),
                occurred: Some(audit::TimeRange { from, to }),
                page: None,
                // The chain's order: a terminal reads top to bottom.
                newest_first: false,
            };
            query(clients, format, filter, page).await
        }
        AuditCommand::Watch {
            tenant,
            after,
            kinds,
        } => watch(clients, format, tenant, after, kinds).await,
        AuditCommand::Verify {
            tenant,
            from_sequence,
            to_sequence,
        } => verify(clients, format, &tenant, from_sequence, to_sequence).await,
        AuditCommand::Export {
            tenant,
            from_sequence,
            to_sequence,
            out,
        } => export(clients, tenant, from_sequence, to_sequence, out).await,
    }
}

/// The subject `audit query --connection` or `--job` names, if any.
fn query_subject(connection: Option<String>, job: Option<String>) -> Option<common::Subject> {
    match (connection, job) {
        (Some(id), _) => Some(common::Subject {
            kind: common::subject::Kind::Connection as i32,
            id,
        }),
        (None, Some(id)) => Some(common::Subject {
            kind: common::subject::Kind::Job as i32,
            id,
        }),
        (None, None) => None,
    }
}

/// Prints the events matching `filter`, page by page as `page` asks.
async fn query(
    clients: &Clients,
    format: Format,
    filter: audit::QueryRequest,
    page: PageArgs,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.audit()?;
    let mut table = Table::new(&EVENT_COLUMNS);
    let mut token = page.first_token();
    loop {
        let answer = target
            .call(
                "Query",
                client.query(audit::QueryRequest {
                    page: Some(common::PageRequest {
                        page_size: page.size(),
                        page_token: token,
                    }),
                    ..filter.clone()
                }),
            )
            .await?;
        for event in &answer.events {
            table.row(event_cells(event));
        }
        match page.next(answer.page.unwrap_or_default().next_page_token) {
            Some(next) => token = next,
            None => break,
        }
    }
    table.print(format)
}

async fn watch(
    clients: &Clients,
    format: Format,
    tenant: String,
    after: u64,
    kinds: Vec<common::EventKind>,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.audit()?;
    let mut stream = target
        .call(
            "Watch",
            client.watch(audit::WatchRequest {
                tenant,
                after_sequence: after,
                kinds: kinds.iter().map(|k| *k as i32).collect(),
            }),
        )
        .await?;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(status) => return Err(target.explain("Watch", &status)),
        };
        print_watched_event(format, &event);
    }
}

/// Prints one event `audit watch` received, as soon as it arrives (no table to align).
fn print_watched_event(format: Format, event: &common::AuditEvent) {
    let cells = event_cells(event);
    match format {
        Format::Json => {
            let object: serde_json::Map<String, Value> = EVENT_COLUMNS
                .iter()
                .map(|c| (*c).to_owned())
                .zip(cells)
                .collect();
            println!("{}", Value::Object(object));
        }
        Format::Csv | Format::Table => {
            let texts: Vec<String> = cells.iter().map(output::text).collect();
            let separator = if format == Format::Csv { "," } else { "  " };
            let texts: Vec<String> = if format == Format::Csv {
                texts.iter().map(|t| output::csv_field(t)).collect()
            } else {
                texts
            };
            println!("{}", texts.join(separator));
        }
    }
}

async fn export(
    clients: &Clients,
    tenant: String,
    from_sequence: u64,
    to_sequence: u64,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.audit()?;
    let stream = target
        .call(
            "Export",
            client.export(audit::ExportRequest {
                tenant,
                from_sequence,
                to_sequence,
            }),
        )
        .await?;
    write_chunks(stream, &target, "Export", out).await
}

const EVENT_COLUMNS: [&str; 10] = [
    "sequence",
    "occurred_at",
    "kind",
    "actor",
    "subject",
    "principal",
    "connection_id",
    "job_id",
    "reason",
    "event_id",
];

fn event_cells(event: &common::AuditEvent) -> Vec<Value> {
    let actor = event.actor.clone().unwrap_or_default();
    let subject = event.subject.clone().unwrap_or_default();
    let subject_kind = output::enum_text(
        common::subject::Kind::try_from(subject.kind)
            .ok()
            .map(|k| k.as_str_name()),
        "KIND_",
    );
    let refs = event.refs.clone().unwrap_or_default();
    vec![
        json!(event.sequence),
        output::time(event.occurred_at.as_ref()),
        json!(output::enum_text(
            common::EventKind::try_from(event.kind)
                .ok()
                .map(|k| k.as_str_name()),
            "EVENT_KIND_"
        )),
        json!(actor.id),
        json!(format!("{subject_kind}:{}", subject.id)),
        json!(refs.principal),
        json!(refs.connection_id),
        json!(refs.job_id),
        json!(event.reason),
        json!(event.event_id),
    ]
}

/// Verifies the chain; a broken chain is the bad-outcome exit.
pub async fn verify(
    clients: &Clients,
    format: Format,
    tenant: &str,
    from_sequence: u64,
    to_sequence: u64,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.audit()?;
    let verdict = target
        .call(
            "Verify",
            client.verify(audit::VerifyRequest {
                tenant: tenant.to_owned(),
                from_sequence,
                to_sequence,
            }),
        )
        .await?;
    let broken = verdict.first_broken.clone().unwrap_or_default();
    match format {
        Format::Table => {
            if verdict.ok {
                println!(
                    "audit chain of {tenant}: intact ({} events, {} signed checkpoints, head {})",
                    verdict.events_checked, verdict.checkpoints_checked, verdict.head_hash
                );
            }
        }
        Format::Json | Format::Csv => {
            let mut table = Table::new(&[
                "tenant",
                "ok",
                "events_checked",
                "checkpoints_checked",
                "head_hash",
                "broken_sequence",
                "broken_event_id",
                "broken_reason",
            ]);
            table.row(vec![
                json!(tenant),
                json!(verdict.ok),
                json!(verdict.events_checked),
                json!(verdict.checkpoints_checked),
                json!(verdict.head_hash),
                json!(broken.sequence),
                json!(broken.event_id),
                json!(broken.reason),
            ]);
            table.print_one(format)?;
        }
    }
    if verdict.ok {
        Ok(())
    } else {
        Err(Failure::new(
            code::BAD_OUTCOME,
            format!(
                "audit chain of {tenant} is broken at event {} ({}): {}",
                broken.sequence, broken.event_id, broken.reason
            ),
        )
        .into())
    }
}

/// Writes an export stream's chunks to `out` (or standard output) as they arrive.
pub async fn write_chunks(
    mut stream: tonic::Streaming<audit::ExportChunk>,
    target: &Target,
    method: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut sink = output::sink(out.as_deref())?;
    let mut bytes = 0usize;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                sink.write_all(&chunk.data)?;
                bytes += chunk.data.len();
            }
            Ok(None) => break,
            Err(status) => return Err(target.explain(method, &status)),
        }
    }
    sink.flush()?;
    if let Some(path) = out {
        eprintln!("wrote {bytes} bytes to {}", path.display());
    }
    Ok(())
}
