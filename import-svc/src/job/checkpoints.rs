//! Per-resource checkpoints of a job (where its listing stands, what it counted) and each
//! connection's high-water marks for incremental syncs, in Postgres.

use chrono::{DateTime, Utc};
use scope_catalog::Resource;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceRow {
    pub resource: String,
    pub phase: String,
    pub next_url: Option<String>,
    pub pages: i64,
    pub records_fetched: i64,
    pub records_written: i64,
    pub records_deleted: i64,
    /// Records left out because Postgres cannot hold them (listed in `skipped_records`).
    pub records_skipped: i64,
    pub records_total: Option<i64>,
    pub max_updated_at: Option<DateTime<Utc>>,
    /// When the listing whose end sweeps deletions began (database time): a full sync's
    /// fetch, an incremental one's id listing.
    pub sweep_started_at: Option<DateTime<Utc>>,
    /// Clio's `Date` on the first page of the fetch: where the next incremental starts.
    pub clio_started_at: Option<DateTime<Utc>>,
}

/// The job's checkpoints, creating the missing ones.
pub async fn resources(
    db: &PgPool,
    job_id: Uuid,
    wanted: &[Resource],
) -> Result<Vec<ResourceRow>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_resources (job_id, resource)
         SELECT $1, r FROM UNNEST($2::text[]) AS r ON CONFLICT DO NOTHING",
    )
    .bind(job_id)
    .bind(
        wanted
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect::<Vec<_>>(),
    )
    .execute(db)
    .await?;
    resource_rows(db, job_id).await
}

pub async fn resource_rows(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
) -> Result<Vec<ResourceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT resource, phase, next_url, pages, records_fetched, records_written, records_deleted,
                records_skipped, records_total, max_updated_at, sweep_started_at, clio_started_at
         FROM job_resources WHERE job_id = $1 ORDER BY resource",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
}

/// One page's effect on a checkpoint; committed in the page's transaction.
#[derive(Debug, Default)]
pub struct CheckpointDelta<'a> {
    pub phase: &'a str,
    pub next_url: Option<&'a str>,
    pub pages: i64,
    pub fetched: i64,
    pub written: i64,
    pub deleted: i64,
    pub total: Option<i64>,
    pub max_updated_at: Option<DateTime<Utc>>,
    /// Clio's `Date` on the fetch's first page (only that page sets it; the first one
    /// committed is kept).
    pub clio_started_at: Option<DateTime<Utc>>,
}

pub async fn save_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    job_id: Uuid,
    resource: Resource,
    delta: &CheckpointDelta<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE job_resources SET phase = $3, next_url = $4,
             pages = pages + $5, records_fetched = records_fetched + $6,
             records_written = records_written + $7, records_deleted = records_deleted + $8,
             records_total = coalesce($9, records_total),
             max_updated_at = greatest(max_updated_at, $10),
             clio_started_at = coalesce(clio_started_at, $11)
         WHERE job_id = $1 AND resource = $2",
    )
    .bind(job_id)
    .bind(resource.as_str())
    .bind(delta.phase)
    .bind(delta.next_url)
    .bind(delta.pages)
    .bind(delta.fetched)
    .bind(delta.written)
    .bind(delta.deleted)
    .bind(delta.total)
    .bind(delta.max_updated_at)
    .bind(delta.clio_started_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE jobs SET changed_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Starts (or, resumed, keeps) the listing whose end sweeps a resource's deletions;
/// returns when it began, in database time (the clock of the records' `seen_by`). Call it
/// before the listing's first request to Clio.
pub async fn start_sweep(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    resource: Resource,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE job_resources SET sweep_started_at = coalesce(sweep_started_at, now())
         WHERE job_id = $1 AND resource = $2 RETURNING sweep_started_at",
    )
    .bind(job_id)
    .bind(resource.as_str())
    .fetch_one(db)
    .await
}

/// Where the connection's next incremental import starts, as a job that just finished
/// listing a resource leaves it: Clio's time when the listing began, or (when Clio sent no
/// `Date`) the newest `updated_at` the job saw.
pub async fn finished_listing_mark(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    resource: Resource,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(clio_started_at, max_updated_at) FROM job_resources
         WHERE job_id = $1 AND resource = $2",
    )
    .bind(job_id)
    .bind(resource.as_str())
    .fetch_one(db)
    .await
}

pub async fn high_water(
    db: impl PgExecutor<'_>,
    connection_id: &str,
    resource: Resource,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT high_water FROM sync_marks WHERE connection_id = $1 AND resource = $2",
    )
    .bind(connection_id)
    .bind(resource.as_str())
    .fetch_optional(db)
    .await
}

/// Records how many records a resource of a job is expected to list (for its ETA).
pub async fn set_expected_total(
    pool: &PgPool,
    job_id: Uuid,
    resource: Resource,
    total: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE job_resources SET records_total = $3 WHERE job_id = $1 AND resource = $2")
        .bind(job_id)
        .bind(resource.as_str())
        .bind(total)
        .execute(pool)
        .await?;
    Ok(())
}

/// Advances (never rewinds) a connection's high-water mark for a resource.
pub async fn advance_high_water(
    tx: &mut Transaction<'_, Postgres>,
    connection_id: &str,
    resource: Resource,
    mark: DateTime<Utc>,
    job_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync_marks (connection_id, resource, high_water, job_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, resource) DO UPDATE
         SET high_water = greatest(sync_marks.high_water, EXCLUDED.high_water), job_id = EXCLUDED.job_id",
    )
    .bind(connection_id)
    .bind(resource.as_str())
    .bind(mark)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
