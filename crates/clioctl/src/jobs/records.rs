//! `clioctl import records` and `clioctl import export`: imported records, a page at a
//! time or streamed to a file.

use std::io::Write;
use std::path::PathBuf;

use proto::imports::v1 as import;
use serde_json::{Value, json};

use super::RecordSelection;
use crate::clients::{Clients, Role};
use crate::output::{self, Format, Table};
use crate::paging::PageArgs;

fn record_request(select: &RecordSelection) -> import::ListRecordsRequest {
    import::ListRecordsRequest {
        clio_account_id: select.account.clone(),
        resource: select.resource.clone(),
        updated_since: select.since,
        include_deleted: select.include_deleted,
        ..Default::default()
    }
}

pub(super) async fn records(
    clients: &Clients,
    format: Format,
    select: RecordSelection,
    page: PageArgs,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.import(&[Role::DataReader])?;
    let mut table = Table::new(&["clio_id", "updated_at", "deleted", "etag", "data"]);
    let mut token = page.first_token();
    loop {
        let answer = target
            .call(
                "ListRecords",
                client.list_records(import::ListRecordsRequest {
                    page_size: page.size(),
                    page_token: token,
                    ..record_request(&select)
                }),
            )
            .await?;
        for record in &answer.records {
            let data = match format {
                // One row a record: the start of the JSON is enough to recognise it.
                Format::Table => json!(truncate(&record.data_json, 80)),
                Format::Json => serde_json::from_str(&record.data_json)
                    .unwrap_or_else(|_| json!(record.data_json)),
                Format::Csv => json!(record.data_json),
            };
            table.row(vec![
                json!(record.clio_id),
                output::time(record.updated_at.as_ref()),
                json!(record.deleted),
                json!(record.etag),
                data,
            ]);
        }
        match page.next(answer.next_page_token) {
            Some(next) => token = next,
            None => break,
        }
    }
    table.print(format)
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

pub(super) async fn export(
    clients: &Clients,
    format: Format,
    select: RecordSelection,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.import(&[Role::DataReader])?;
    let request = record_request(&select);
    let mut stream = target
        .call(
            "ExportRecords",
            client.export_records(import::ExportRecordsRequest {
                clio_account_id: request.clio_account_id,
                resource: request.resource,
                updated_since: request.updated_since,
                include_deleted: request.include_deleted,
            }),
        )
        .await?;
    let mut sink = output::sink(out.as_deref())?;
    let mut sink = std::io::BufWriter::new(&mut sink);
    let csv = format == Format::Csv;
    if csv {
        writeln!(
            sink,
            "resource,clio_account_id,clio_id,etag,updated_at,deleted,data_json"
        )?;
    }
    let mut count = 0u64;
    loop {
        let record = match stream.message().await {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(status) => return Err(target.explain("ExportRecords", &status)),
        };
        let updated_at = output::time(record.updated_at.as_ref());
        if csv {
            writeln!(
                sink,
                "{},{},{},{},{},{},{}",
                output::csv_field(&record.resource),
                output::csv_field(&record.clio_account_id),
                output::csv_field(&record.clio_id),
                output::csv_field(&record.etag),
                output::text(&updated_at),
                record.deleted,
                output::csv_field(&record.data_json)
            )?;
        } else {
            let data: Value =
                serde_json::from_str(&record.data_json).unwrap_or_else(|_| json!(record.data_json));
            let line = json!({
                "resource": record.resource,
                "clio_account_id": record.clio_account_id,
                "clio_id": record.clio_id,
                "etag": record.etag,
                "updated_at": updated_at,
                "deleted": record.deleted,
                "data": data,
            });
            writeln!(sink, "{line}")?;
        }
        count += 1;
    }
    sink.flush()?;
    eprintln!("exported {count} {} records", select.resource);
    Ok(())
}
