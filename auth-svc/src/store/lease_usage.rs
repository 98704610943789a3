//! `lease_usage`: leases aggregated per connection and caller until the next flush.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::domain::ConnectionId;
use crate::error::AuthError;

/// Distinct purposes kept per row (a job id each); beyond this only the count grows.
const MAX_PURPOSES: i32 = 20;

/// One lease handed out.
pub struct LeaseUse<'a> {
    pub connection: ConnectionId,
    pub caller: &'a str,
    pub purpose: &'a str,
    pub at: DateTime<Utc>,
}

/// Adds one lease to its connection's and caller's row.
pub async fn add(db: impl PgExecutor<'_>, lease: &LeaseUse<'_>) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO lease_usage AS u (connection_id, caller, lease_count, first_used_at, \
         last_used_at, purposes) VALUES ($1, $2, 1, $3, $3, ARRAY[$4]) \
         ON CONFLICT (connection_id, caller) DO UPDATE SET \
         lease_count = u.lease_count + 1, \
         first_used_at = LEAST(u.first_used_at, EXCLUDED.first_used_at), \
         last_used_at = GREATEST(u.last_used_at, EXCLUDED.last_used_at), \
         purposes = CASE WHEN $4 = ANY(u.purposes) OR cardinality(u.purposes) >= $5 \
                    THEN u.purposes ELSE u.purposes || $4 END",
    )
    .bind(lease.connection.0)
    .bind(lease.caller)
    .bind(lease.at)
    .bind(lease.purpose)
    .bind(MAX_PURPOSES)
    .execute(db)
    .await?;
    Ok(())
}

/// The leases of one connection by one caller since the last flush.
#[derive(FromRow)]
pub struct Usage {
    pub connection_id: Uuid,
    pub caller: String,
    pub lease_count: i64,
    pub first_used_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub purposes: Vec<String>,
}

/// Deletes every row and returns them (in no particular order).
pub async fn take_all(db: impl PgExecutor<'_>) -> Result<Vec<Usage>, AuthError> {
    Ok(sqlx::query_as(
        "DELETE FROM lease_usage RETURNING connection_id, caller, lease_count, \
         first_used_at, last_used_at, purposes",
    )
    .fetch_all(db)
    .await?)
}
