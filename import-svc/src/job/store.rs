//! Jobs in Postgres: their rows, status changes, listing and retries. Per-resource
//! progress lives in [`super::checkpoints`].

use chrono::{DateTime, Utc};
use proto::imports::v1 as pb;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::checkpoints::ResourceRow;
use super::spec::{JobSpec, Mode, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    DeadLettered,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        Some(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "dead_lettered" => JobStatus::DeadLettered,
            _ => return None,
        })
    }

    /// A finished job never runs again, whatever the queue redelivers.
    pub fn is_final(self) -> bool {
        match self {
            JobStatus::Completed
            | JobStatus::Failed
            | JobStatus::Cancelled
            | JobStatus::DeadLettered => true,
            JobStatus::Queued | JobStatus::Running => false,
        }
    }

    pub fn to_wire(self) -> pb::JobStatus {
        match self {
            JobStatus::Queued => pb::JobStatus::Queued,
            JobStatus::Running => pb::JobStatus::Running,
            JobStatus::Completed => pb::JobStatus::Completed,
            JobStatus::Failed => pb::JobStatus::Failed,
            JobStatus::Cancelled => pb::JobStatus::Cancelled,
            JobStatus::DeadLettered => pb::JobStatus::DeadLettered,
        }
    }

    pub fn from_wire(status: i32) -> Option<JobStatus> {
        match pb::JobStatus::try_from(status).ok()? {
            pb::JobStatus::Unspecified => None,
            pb::JobStatus::Queued => Some(JobStatus::Queued),
            pb::JobStatus::Running => Some(JobStatus::Running),
            pb::JobStatus::Completed => Some(JobStatus::Completed),
            pb::JobStatus::Failed => Some(JobStatus::Failed),
            pb::JobStatus::Cancelled => Some(JobStatus::Cancelled),
            pb::JobStatus::DeadLettered => Some(JobStatus::DeadLettered),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: Uuid,
    pub connection_id: String,
    pub clio_account_id: Option<String>,
    pub resources: Vec<String>,
    pub mode: String,
    pub updated_since: Option<DateTime<Utc>>,
    pub requested_by: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub attempts: i32,
    pub cancel_requested: bool,
    pub rate_limit_wait_ms: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub changed_at: DateTime<Utc>,
    /// The connection's firm and region, once auth-svc told us (for audit events).
    pub tenant: Option<String>,
    pub region: Option<i32>,
    pub cancel_reason: Option<String>,
    pub cancelled_by: Option<String>,
    /// The verified caller that submitted it through SubmitJob (`None`: from the queue).
    pub submitted_by: Option<String>,
    pub priority: String,
}

impl JobRow {
    pub fn status(&self) -> JobStatus {
        JobStatus::parse(&self.status).unwrap_or(JobStatus::Failed)
    }
}

const JOB_COLUMNS: &str = "job_id, connection_id, clio_account_id, resources, mode, updated_since, requested_by, status,
    failure_reason, attempts, cancel_requested, rate_limit_wait_ms, created_at, started_at, finished_at, changed_at,
    tenant, region, cancel_reason, cancelled_by, submitted_by, priority";

/// Stores a job as queued unless it exists already (a redelivered or resubmitted id).
/// Returns whether this call created it.
pub async fn insert_queued(db: impl PgExecutor<'_>, spec: &JobSpec) -> Result<bool, sqlx::Error> {
    let fields: serde_json::Map<String, serde_json::Value> = spec
        .extra_fields
        .iter()
        .map(|(r, f)| (r.as_str().to_owned(), serde_json::json!(f)))
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO jobs (job_id, connection_id, resources, mode, updated_since, filters, fields, requested_by, priority, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued')
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(spec.job_id)
    .bind(&spec.connection_id)
    .bind(spec.resources.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>())
    .bind(spec.mode.as_str())
    .bind(spec.updated_since)
    .bind(serde_json::json!(spec.filters))
    .bind(serde_json::Value::Object(fields))
    .bind(&spec.requested_by)
    .bind(spec.priority.as_str())
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Records the verified caller that submitted a job this call created, and the tenant
/// of its connection when the caller's limits required looking it up.
pub async fn record_submitter(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    caller: &str,
    tenant: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET submitted_by = $2, tenant = coalesce($3, tenant)
         WHERE job_id = $1 AND submitted_by IS NULL",
    )
    .bind(job_id)
    .bind(caller)
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(())
}

/// The tenants the jobs of a Clio account ran for (its firm; normally one).
pub async fn account_tenants(
    db: impl PgExecutor<'_>,
    account_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT tenant FROM jobs WHERE clio_account_id = $1 AND tenant IS NOT NULL",
    )
    .bind(account_id)
    .fetch_all(db)
    .await
}

/// Forgets a job that was stored but never reached the queue, so that the caller's retry
/// (same job id) stores and runs it afresh. A job a consumer has already taken (the
/// publish failed only to confirm) is left alone. Returns whether it was removed.
pub async fn remove_unqueued(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query(
        "DELETE FROM jobs WHERE job_id = $1 AND status = 'queued' AND attempts = 0 AND NOT cancel_requested",
    )
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(removed.rows_affected() == 1)
}

/// Records a refused job (when its id could be read), keeping what else is known.
/// Returns whether this call ended the job (false: it had already ended).
pub async fn record_dead_lettered(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    connection_id: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query(
        "INSERT INTO jobs (job_id, connection_id, resources, mode, status, failure_reason, finished_at)
         VALUES ($1, $2, '{}', 'full', 'dead_lettered', $3, now())
         ON CONFLICT (job_id) DO UPDATE SET status = 'dead_lettered', failure_reason = $3,
             finished_at = now(), changed_at = now()
         WHERE jobs.status IN ('queued', 'running')",
    )
    .bind(job_id)
    .bind(connection_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(ended.rows_affected() == 1)
}

/// Ends a queued job whose cancel was requested before it ran; returns it if it did.
pub async fn cancel_if_requested(
    tx: &mut Transaction<'_, Postgres>,
    job_id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), changed_at = now()
         WHERE job_id = $1 AND status = 'queued' AND cancel_requested
         RETURNING {JOB_COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await
}

/// Moves a job to running (counting the attempt) unless it has finished. Returns the row
/// as it now is (call [`cancel_if_requested`] first in the same transaction).
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    job_id: Uuid,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, next_attempt_at = NULL,
             started_at = coalesce(started_at, now()), changed_at = now()
         WHERE job_id = $1 AND status IN ('queued', 'running')
         RETURNING {JOB_COLUMNS}"
    );
    if let Some(row) = sqlx::query_as::<_, JobRow>(&sql)
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
    {
        return Ok(Some(row));
    }
    get(&mut **tx, job_id).await
}

pub async fn get(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1");
    sqlx::query_as(&sql).bind(job_id).fetch_optional(db).await
}

/// Records the Clio account the job's lease is for; returns the job's attempt number.
pub async fn set_account(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    account_id: &str,
) -> Result<i32, sqlx::Error> {
    let attempts: Option<i32> = sqlx::query_scalar(
        "UPDATE jobs SET clio_account_id = $2, changed_at = now() WHERE job_id = $1 RETURNING attempts",
    )
    .bind(job_id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    Ok(attempts.unwrap_or(0))
}

/// Remembers the connection's firm and region on the job, for events recorded later.
pub async fn set_tenant(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    tenant: &str,
    region: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET tenant = $2, region = $3 WHERE job_id = $1")
        .bind(job_id)
        .bind(tenant)
        .bind(region)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends a job and returns it; `None` when it had already ended (it keeps its first ending).
pub async fn finish(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = $2, failure_reason = $3, finished_at = now(), changed_at = now()
         WHERE job_id = $1 AND status IN ('queued', 'running')
         RETURNING {JOB_COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(job_id)
        .bind(status.as_str())
        .bind(reason)
        .fetch_optional(db)
        .await
}

/// Puts a running job back to queued (shutdown or a lost channel: it will be redelivered).
pub async fn requeue(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET status = 'queued', changed_at = now() WHERE job_id = $1 AND status = 'running'")
        .bind(job_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Asks a job to stop: a queued one is cancelled now, a running one at its next page. The
/// first request's reason and caller are kept. Returns the job and whether it was
/// cancelled by this call.
pub async fn request_cancel(
    tx: &mut Transaction<'_, Postgres>,
    job_id: Uuid,
    reason: &str,
    by: &str,
) -> Result<Option<(JobRow, bool)>, sqlx::Error> {
    let before: Option<String> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE job_id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    let sql = format!(
        "UPDATE jobs SET changed_at = now(),
             cancel_reason = CASE WHEN cancel_requested THEN cancel_reason ELSE $2 END,
             cancelled_by = CASE WHEN cancel_requested THEN cancelled_by ELSE $3 END,
             cancel_requested = true,
             status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
             finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
         WHERE job_id = $1 RETURNING {JOB_COLUMNS}"
    );
    let row: JobRow = sqlx::query_as(&sql)
        .bind(job_id)
        .bind(reason.trim())
        .bind(by)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some((row, before == "queued")))
}

pub async fn cancel_requested(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<bool, sqlx::Error> {
    let requested: Option<bool> =
        sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(db)
            .await?;
    Ok(requested.unwrap_or(false))
}

pub async fn add_rate_limit_wait(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET rate_limit_wait_ms = rate_limit_wait_ms + $2, changed_at = now() WHERE job_id = $1")
        .bind(job_id)
        .bind(ms)
        .execute(db)
        .await?;
    Ok(())
}

/// Filters for ListJobs.
#[derive(Debug, Default)]
pub struct JobFilter {
    pub connection_id: Option<String>,
    pub status: Option<JobStatus>,
    /// Jobs created before this one (cursor: the last job id of the previous page).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
    /// For a caller limited to tenants: only jobs of those tenants, or that it submitted.
    pub visible_to: Option<(Vec<String>, String)>,
}

pub async fn list(db: impl PgExecutor<'_>, filter: &JobFilter) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE ($1::text IS NULL OR connection_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR (created_at, job_id) < ($3, $4))
           AND ($6::text[] IS NULL OR tenant = ANY($6) OR submitted_by = $7)
         ORDER BY created_at DESC, job_id DESC
         LIMIT $5"
    );
    sqlx::query_as(&sql)
        .bind(filter.connection_id.as_deref())
        .bind(filter.status.map(JobStatus::as_str))
        .bind(filter.before.map(|b| b.0))
        .bind(filter.before.map(|b| b.1))
        .bind(filter.limit)
        .bind(filter.visible_to.as_ref().map(|v| v.0.clone()))
        .bind(filter.visible_to.as_ref().map(|v| v.1.clone()))
        .fetch_all(db)
        .await
}

/// The wire view of a job and its checkpoints.
pub fn to_wire(job: &JobRow, resources: &[ResourceRow]) -> pb::Job {
    let ts = |t: Option<DateTime<Utc>>| t.map(proto::time::timestamp);
    pb::Job {
        job_id: job.job_id.to_string(),
        connection_id: job.connection_id.clone(),
        resources: job.resources.clone(),
        mode: Mode::parse(&job.mode).map_or(pb::ImportMode::Unspecified, Mode::to_wire) as i32,
        status: job.status().to_wire() as i32,
        progress: resources
            .iter()
            .map(|r| pb::ResourceProgress {
                resource: r.resource.clone(),
                pages: r.pages.max(0) as u64,
                records_fetched: r.records_fetched.max(0) as u64,
                records_written: r.records_written.max(0) as u64,
                records_deleted: r.records_deleted.max(0) as u64,
                records_skipped: r.records_skipped.max(0) as u64,
                done: r.phase == "done",
            })
            .collect(),
        failure_reason: job.failure_reason.clone().unwrap_or_default(),
        attempts: job.attempts.max(0) as u32,
        requested_by: job.requested_by.clone(),
        created_at: ts(Some(job.created_at)),
        started_at: ts(job.started_at),
        finished_at: ts(job.finished_at),
        clio_account_id: job.clio_account_id.clone().unwrap_or_default(),
        priority: Priority::parse(&job.priority)
            .map_or(pb::JobPriority::Unspecified, Priority::to_wire) as i32,
    }
}

/// Notes that the job's message waits in a retry tier until `delay_ms` from now: the job
/// shows as queued with its reason, and the reconciler leaves it alone until then.
pub async fn schedule_retry(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    delay_ms: u64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = 'queued', retries = retries + 1, last_retry_reason = $3,
             next_attempt_at = now() + make_interval(secs => $2::double precision / 1000),
             changed_at = now()
         WHERE job_id = $1 AND status IN ('queued', 'running')",
    )
    .bind(job_id)
    .bind(i64::try_from(delay_ms).unwrap_or(i64::MAX))
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// A non-final job nobody has touched for a while (reconciler candidates).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaleJob {
    pub job_id: Uuid,
    pub status: String,
    pub republished: i32,
}

/// Jobs queued or running, untouched for `after_secs`, and not waiting in a retry tier.
pub async fn stale_jobs(
    db: impl PgExecutor<'_>,
    after_secs: u64,
    limit: i64,
) -> Result<Vec<StaleJob>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, status, republished FROM jobs
         WHERE status IN ('queued', 'running')
           AND changed_at < now() - make_interval(secs => $1::double precision)
           AND (next_attempt_at IS NULL
                OR next_attempt_at < now() - make_interval(secs => $1::double precision))
         ORDER BY changed_at LIMIT $2",
    )
    .bind(i64::try_from(after_secs).unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The advisory lock a consumer holds on a job while it works on it (any replica).
pub const JOB_LOCK_SQL: &str = "SELECT pg_advisory_lock(hashtextextended($1, 0))";
pub const JOB_UNLOCK_SQL: &str = "SELECT pg_advisory_unlock(hashtextextended($1, 0))";

/// The lock of one of a connection's job slots, held while a job of it runs (any
/// replica). Keyed apart from job locks by the hash seed.
#[derive(Debug)]
pub struct ConnectionSlot(String);

const CONNECTION_TRY_LOCK_SQL: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 1))";
const CONNECTION_UNLOCK_SQL: &str = "SELECT pg_advisory_unlock(hashtextextended($1, 1))";

/// Takes a free one of `slots` job slots of `connection_id` on `conn` (a session lock,
/// released by [`unlock_connection`] or when the connection closes); `None` when every
/// slot is taken.
pub async fn try_lock_connection(
    conn: &mut PgConnection,
    connection_id: &str,
    slots: usize,
) -> Result<Option<ConnectionSlot>, sqlx::Error> {
    for slot in 0..slots {
        let key = format!("connection:{connection_id}:{slot}");
        let (locked,): (bool,) = sqlx::query_as(CONNECTION_TRY_LOCK_SQL)
            .bind(&key)
            .fetch_one(&mut *conn)
            .await?;
        if locked {
            return Ok(Some(ConnectionSlot(key)));
        }
    }
    Ok(None)
}

pub async fn unlock_connection(
    conn: &mut PgConnection,
    slot: &ConnectionSlot,
) -> Result<(), sqlx::Error> {
    sqlx::query(CONNECTION_UNLOCK_SQL)
        .bind(&slot.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// Notes that a job's message waits in the deferral tier until `delay_ms` from now (its
/// connection's turn has not come): the reconciler leaves it alone until then. Unlike a
/// retry it is no failure, so no reason and no count.
pub async fn note_deferred(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    delay_ms: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET next_attempt_at = now() + make_interval(secs => $2::double precision / 1000),
             changed_at = now()
         WHERE job_id = $1 AND status = 'queued'",
    )
    .bind(job_id)
    .bind(i64::try_from(delay_ms).unwrap_or(i64::MAX))
    .execute(db)
    .await?;
    Ok(())
}

/// Notes that queued jobs are held by a consumer's scheduler (waiting for their turn), so
/// the reconciler does not take them for lost.
pub async fn touch(db: impl PgExecutor<'_>, job_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET changed_at = now() WHERE job_id = ANY($1) AND status = 'queued'")
        .bind(job_ids)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether some consumer holds the job's lock now (it is working on the job).
pub async fn is_worked_on(pool: &PgPool, job_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let key = job_id.to_string();
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .fetch_one(&mut *conn)
        .await?;
    if free {
        sqlx::query(JOB_UNLOCK_SQL)
            .bind(&key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(!free)
}

/// The stored job as the wire message its producer sent (for publishing it again).
pub async fn stored_job(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
) -> Result<Option<pb::ImportJob>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        connection_id: String,
        resources: Vec<String>,
        mode: String,
        updated_since: Option<DateTime<Utc>>,
        filters: serde_json::Value,
        fields: serde_json::Value,
        requested_by: String,
        priority: String,
    }
    let row: Option<Stored> = sqlx::query_as(
        "SELECT connection_id, resources, mode, updated_since, filters, fields, requested_by, priority
         FROM jobs WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| pb::ImportJob {
        job_id: job_id.to_string(),
        connection_id: row.connection_id,
        resources: row.resources,
        mode: Mode::parse(&row.mode).map_or(pb::ImportMode::Full, Mode::to_wire) as i32,
        updated_since: row.updated_since.map(proto::time::timestamp),
        filters: serde_json::from_value(row.filters).unwrap_or_default(),
        fields: serde_json::from_value::<std::collections::BTreeMap<String, Vec<String>>>(
            row.fields,
        )
        .unwrap_or_default()
        .into_iter()
        .map(|(resource, fields)| pb::ResourceFields { resource, fields })
        .collect(),
        requested_by: row.requested_by,
        priority: Priority::parse(&row.priority)
            .map_or(pb::JobPriority::Unspecified, Priority::to_wire) as i32,
    }))
}

/// Counts a re-publication by the reconciler (and restarts its staleness clock).
pub async fn mark_republished(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET republished = republished + 1, next_attempt_at = NULL, changed_at = now()
         WHERE job_id = $1",
    )
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(())
}
