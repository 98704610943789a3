//! The `suggestions` table: one row per calendar entry of an account ever suggested,
//! holding only what its time entry needs, and what became of it.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{FromRow, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::rules::Draft;

/// What became of a suggestion (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Written,
    Rejected,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Written => "written",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Written,
            Status::Rejected,
            Status::Failed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Whose suggestions they are: the connection they came from, as auth-svc described it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub connection_id: &'a str,
    pub tenant: &'a str,
    pub clio_account_id: &'a str,
    pub owner: &'a str,
    /// The caller that asked for detection.
    pub created_by: &'a str,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct SuggestionRow {
    pub suggestion_id: Uuid,
    pub connection_id: String,
    pub tenant: String,
    pub clio_account_id: String,
    pub owner: String,
    pub calendar_entry_id: String,
    pub matter_id: i64,
    pub user_id: i64,
    pub entry_date: NaiveDate,
    pub quantity_secs: i64,
    pub description: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub rejection_reason: Option<String>,
    pub clio_activity_id: Option<i64>,
    pub error: Option<String>,
    pub write_claimed_until: Option<DateTime<Utc>>,
    pub write_attempts: i32,
}

/// Which of `entry_ids` of the account already have a suggestion, whatever its status.
pub async fn suggested(
    db: impl PgExecutor<'_>,
    clio_account_id: &str,
    entry_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT calendar_entry_id FROM suggestions
         WHERE clio_account_id = $1 AND calendar_entry_id = ANY($2)",
    )
    .bind(clio_account_id)
    .bind(entry_ids)
    .fetch_all(db)
    .await
}

/// Records a pending suggestion for `draft`, unless the entry has one already (then
/// `None`: another detection got there first).
pub async fn insert(
    db: impl PgExecutor<'_>,
    origin: &Origin<'_>,
    draft: &Draft,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO suggestions (suggestion_id, connection_id, tenant, clio_account_id, owner,
             calendar_entry_id, matter_id, user_id, entry_date, quantity_secs, description,
             created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (clio_account_id, calendar_entry_id) DO NOTHING
         RETURNING *",
    )
    .bind(Uuid::now_v7())
    .bind(origin.connection_id)
    .bind(origin.tenant)
    .bind(origin.clio_account_id)
    .bind(origin.owner)
    .bind(&draft.calendar_entry_id)
    .bind(draft.matter_id)
    .bind(draft.user_id)
    .bind(draft.date)
    .bind(draft.quantity_secs)
    .bind(&draft.description)
    .bind(origin.at)
    .bind(origin.created_by)
    .fetch_optional(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    read(db, suggestion_id, "").await
}

/// The suggestion, locked until the transaction ends (a decision is made on it).
pub async fn lock(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    read(db, suggestion_id, " FOR UPDATE").await
}

async fn read(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
    locking: &'static str,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    let sql = format!("SELECT * FROM suggestions WHERE suggestion_id = $1{locking}");
    sqlx::query_as(&sql)
        .bind(suggestion_id)
        .fetch_optional(db)
        .await
}

/// A person's decision on a pending suggestion.
pub enum Decision<'a> {
    /// Write the time entry, as approved (the suggestion's own quantity and description
    /// unless the approver edited them).
    Approve {
        quantity_secs: i64,
        description: &'a str,
    },
    /// Write nothing, for this reason.
    Reject { reason: &'a str },
}

/// Records `by`'s decision on a pending suggestion; returns it as it now is.
pub async fn decide(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
    by: &str,
    decision: &Decision<'_>,
    at: DateTime<Utc>,
) -> Result<SuggestionRow, sqlx::Error> {
    let (status, quantity_secs, description, reason) = match decision {
        Decision::Approve {
            quantity_secs,
            description,
        } => (
            Status::Approved,
            Some(*quantity_secs),
            Some(*description),
            None,
        ),
        Decision::Reject { reason } => (Status::Rejected, None, None, Some(*reason)),
    };
    sqlx::query_as(
        "UPDATE suggestions SET status = $2, decided_by = $3, decided_at = $4,
             quantity_secs = COALESCE($5, quantity_secs),
             description = COALESCE($6, description), rejection_reason = $7
         WHERE suggestion_id = $1 AND status = 'pending'
         RETURNING *",
    )
    .bind(suggestion_id)
    .bind(status.as_str())
    .bind(by)
    .bind(at)
    .bind(quantity_secs)
    .bind(description)
    .bind(reason)
    .fetch_one(db)
    .await
}

/// Takes an approved suggestion for writing until `hold` from now (database time), unless
/// another writer holds it; counts the attempt.
pub async fn claim(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
    hold: std::time::Duration,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE suggestions
            SET write_claimed_until = now() + make_interval(secs => $2),
                write_attempts = write_attempts + 1
          WHERE suggestion_id = $1 AND status = 'approved'
            AND (write_claimed_until IS NULL OR write_claimed_until <= now())
          RETURNING *",
    )
    .bind(suggestion_id)
    .bind(hold.as_secs_f64())
    .fetch_optional(db)
    .await
}

/// After an attempt that could not finish: the next may start `after` from now.
pub async fn retry_after(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
    after: std::time::Duration,
    why: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE suggestions SET write_claimed_until = now() + make_interval(secs => $2), error = $3
          WHERE suggestion_id = $1 AND status = 'approved'",
    )
    .bind(suggestion_id)
    .bind(after.as_secs_f64())
    .bind(why)
    .execute(db)
    .await?;
    Ok(())
}

/// The approved suggestion's time entry exists in Clio as `activity_id`.
pub async fn written(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
    activity_id: i64,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE suggestions SET status = 'written', clio_activity_id = $2, error = NULL,
             write_claimed_until = NULL
          WHERE suggestion_id = $1 AND status = 'approved'
          RETURNING *",
    )
    .bind(suggestion_id)
    .bind(activity_id)
    .fetch_optional(db)
    .await
}

/// Ends an approved (or, for `cancelled`, pending) suggestion without a write.
pub async fn end_unwritten(
    db: impl PgExecutor<'_>,
    suggestion_id: Uuid,
    status: Status,
    why: &str,
) -> Result<Option<SuggestionRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE suggestions SET status = $2, error = $3, write_claimed_until = NULL
          WHERE suggestion_id = $1 AND status IN ('pending', 'approved')
          RETURNING *",
    )
    .bind(suggestion_id)
    .bind(status.as_str())
    .bind(why)
    .fetch_optional(db)
    .await
}

/// Approved suggestions no writer holds (a write to finish), oldest first.
pub async fn unwritten(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT suggestion_id FROM suggestions
          WHERE status = 'approved' AND (write_claimed_until IS NULL OR write_claimed_until <= now())
          ORDER BY suggestion_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Connections with suggestions still to decide or write.
pub async fn open_connections(db: impl PgExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT connection_id FROM suggestions WHERE status IN ('pending', 'approved')",
    )
    .fetch_all(db)
    .await
}

/// Cancels every pending suggestion of the connection and every approved one no writer
/// holds; returns them.
pub async fn cancel_open(
    db: impl PgExecutor<'_>,
    connection_id: &str,
    why: &str,
) -> Result<Vec<SuggestionRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE suggestions SET status = 'cancelled', error = $2, write_claimed_until = NULL
          WHERE connection_id = $1
            AND (status = 'pending'
                 OR (status = 'approved'
                     AND (write_claimed_until IS NULL OR write_claimed_until <= now())))
          RETURNING *",
    )
    .bind(connection_id)
    .bind(why)
    .fetch_all(db)
    .await
}

/// A ListSuggestions query; every filter is optional.
#[derive(Debug, Default)]
pub struct Filter {
    pub connection_id: Option<String>,
    pub user_id: Option<i64>,
    pub matter_id: Option<i64>,
    pub status: Option<Status>,
    /// Only these owners' suggestions, unless the caller may see every owner's.
    pub owner: Option<String>,
    /// Only these tenants' suggestions (a tenant-limited caller).
    pub tenants: Option<Vec<String>>,
    /// Suggestions after this id (the previous page's last).
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &Filter,
) -> Result<Vec<SuggestionRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM suggestions WHERE true");
    if let Some(connection) = &filter.connection_id {
        query.push(" AND connection_id = ").push_bind(connection);
    }
    if let Some(user) = filter.user_id {
        query.push(" AND user_id = ").push_bind(user);
    }
    if let Some(matter) = filter.matter_id {
        query.push(" AND matter_id = ").push_bind(matter);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(owner) = &filter.owner {
        query.push(" AND owner = ").push_bind(owner);
    }
    if let Some(tenants) = &filter.tenants {
        query
            .push(" AND tenant = ANY(")
            .push_bind(tenants)
            .push(")");
    }
    if let Some(after) = filter.after {
        query.push(" AND suggestion_id > ").push_bind(after);
    }
    query
        .push(" ORDER BY suggestion_id LIMIT ")
        .push_bind(filter.limit);
    query.build_query_as().fetch_all(db).await
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn statuses_read_back_as_written() {
        for status in [
            Status::Pending,
            Status::Approved,
            Status::Written,
            Status::Rejected,
            Status::Failed,
            Status::Cancelled,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("maybe"), None);
    }
}
