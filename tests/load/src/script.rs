//! The references for the import: what a team would write instead of using import-svc.
//!
//! Both read the same simulator with the same token, fields and page size (200) as
//! import-svc, sequentially following `meta.paging.next`, parse each page into JSON values
//! (what Python's `response.json()` does), and write into a table of the same shape as
//! import-svc's `contacts` (columns and indexes), on a fresh database of the same Postgres.
//!
//! - the **competent** script writes a page with one batched upsert (`UNNEST` arrays,
//!   `INSERT … ON CONFLICT DO UPDATE` keeping the newer version) and commits once per page;
//! - the **naive** script inserts and commits each record on its own
//!   (`BEGIN; INSERT; COMMIT`, as psycopg does per `execute` + `commit`).
//!
//! Each keeps its own timers of Clio (HTTP + JSON) and Postgres, to show where a simple
//! importer's time goes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

/// import-svc's `contacts` table: its columns and indexes (migrations 0003 and 0007).
pub(crate) const CONTACTS_DDL: &str = "
CREATE TABLE contacts (
    clio_account_id text NOT NULL,
    clio_id         bigint NOT NULL,
    etag            text,
    updated_at      timestamptz,
    data            jsonb NOT NULL,
    connection_id   text NOT NULL,
    seen_in_job     uuid,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    seen_by         jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (clio_account_id, clio_id)
);
CREATE INDEX contacts_by_updated ON contacts (clio_account_id, updated_at);
CREATE INDEX contacts_by_stored ON contacts (stored_at);
";

/// The account and connection the scripts store under (they need no lookup for them).
const ACCOUNT: &str = "script";

const UPSERT_PAGE: &str = "
INSERT INTO contacts (clio_account_id, clio_id, etag, updated_at, data, connection_id)
SELECT $1, u.id, u.etag, u.updated_at, u.data, $1
FROM UNNEST($2::bigint[], $3::text[], $4::timestamptz[], $5::jsonb[])
    AS u(id, etag, updated_at, data)
ON CONFLICT (clio_account_id, clio_id) DO UPDATE SET
    etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at, data = EXCLUDED.data,
    stored_at = now(), deleted_at = NULL
WHERE contacts.updated_at IS NULL OR EXCLUDED.updated_at >= contacts.updated_at";

const INSERT_ONE: &str = "
INSERT INTO contacts (clio_account_id, clio_id, etag, updated_at, data, connection_id)
VALUES ($1, $2, $3, $4, $5, $1)
ON CONFLICT (clio_account_id, clio_id) DO UPDATE SET
    etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at, data = EXCLUDED.data,
    stored_at = now(), deleted_at = NULL
WHERE contacts.updated_at IS NULL OR EXCLUDED.updated_at >= contacts.updated_at";

/// How a script writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One upsert and one commit per page.
    Competent,
    /// One insert and one commit per record.
    Naive,
}

/// Where a script reads from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The contacts list's first page, `fields` and `limit` included.
    pub first_page: String,
    pub access_token: String,
}

/// What a script did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptRun {
    pub records: u64,
    pub pages: u64,
    pub wall: Duration,
    /// Waiting for and parsing Clio's answers.
    pub clio: Duration,
    /// Writing and committing.
    pub postgres: Duration,
    /// Live rows in its table afterwards.
    pub stored: i64,
}

impl ScriptRun {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Creates the script's table in the (fresh) database at `url`.
pub async fn prepare(url: &str) -> Result<PgPool> {
    // One connection: a script is one sequential program.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("connect the script's database")?;
    sqlx::raw_sql(CONTACTS_DDL).execute(&pool).await?;
    Ok(pool)
}

/// Runs the script over the list until it ends or `limit` records are stored.
pub async fn run(style: Style, source: &Source, pool: &PgPool, limit: u64) -> Result<ScriptRun> {
    let http = reqwest::Client::new();
    let mut run = ScriptRun::default();
    let mut next = Some(source.first_page.clone());
    let started = Instant::now();
    while let Some(url) = next.take() {
        if run.records >= limit {
            break;
        }
        let asked = Instant::now();
        let page = fetch(&http, &url, &source.access_token).await?;
        run.clio += asked.elapsed();
        let records = page["data"].as_array().context("a page without data")?;
        let take = usize::try_from(limit - run.records).unwrap_or(usize::MAX);
        let records = &records[..records.len().min(take)];
        let writing = Instant::now();
        match style {
            Style::Competent => upsert_page(pool, records).await?,
            Style::Naive => insert_each(pool, records).await?,
        }
        run.postgres += writing.elapsed();
        run.records += records.len() as u64;
        run.pages += 1;
        next = page["meta"]["paging"]["next"].as_str().map(str::to_owned);
    }
    run.wall = started.elapsed();
    run.stored = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE deleted_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(run)
}

async fn fetch(http: &reqwest::Client, url: &str, token: &str) -> Result<Value> {
    let answer = http.get(url).bearer_auth(token).send().await?;
    let status = answer.status();
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            answer.text().await.unwrap_or_default()
        );
    }
    Ok(answer.json().await?)
}

/// A page's columns, as the upsert unnests them.
struct Columns {
    ids: Vec<i64>,
    etags: Vec<Option<String>>,
    updated: Vec<Option<DateTime<Utc>>>,
    data: Vec<Value>,
}

fn columns(records: &[Value]) -> Result<Columns> {
    let mut columns = Columns {
        ids: Vec::with_capacity(records.len()),
        etags: Vec::with_capacity(records.len()),
        updated: Vec::with_capacity(records.len()),
        data: Vec::with_capacity(records.len()),
    };
    for record in records {
        columns
            .ids
            .push(record["id"].as_i64().context("a contact without an id")?);
        columns
            .etags
            .push(record["etag"].as_str().map(str::to_owned));
        columns.updated.push(
            record["updated_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.to_utc()),
        );
        columns.data.push(record.clone());
    }
    Ok(columns)
}

async fn upsert_page(pool: &PgPool, records: &[Value]) -> Result<()> {
    let columns = columns(records)?;
    let mut tx: Transaction<'_, Postgres> = pool.begin().await?;
    sqlx::query(UPSERT_PAGE)
        .bind(ACCOUNT)
        .bind(columns.ids)
        .bind(columns.etags)
        .bind(columns.updated)
        .bind(columns.data)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_each(pool: &PgPool, records: &[Value]) -> Result<()> {
    let columns = columns(records)?;
    for i in 0..records.len() {
        let mut tx = pool.begin().await?;
        sqlx::query(INSERT_ONE)
            .bind(ACCOUNT)
            .bind(columns.ids[i])
            .bind(&columns.etags[i])
            .bind(columns.updated[i])
            .bind(&columns.data[i])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
