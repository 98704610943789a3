//! `lease_usage`: leases aggregated per connection and caller until the next flush.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::domain::ConnectionId;
use crate::error::AuthError;

/// Distinct purposes kept per row (a job id each); beyond this only the count grows.
const MAX_PURPOSES: i32 = 20;

/// Leases handed out to one caller for one connection, written together.
pub struct LeaseUses<'a> {
    pub connection: ConnectionId,
    pub caller: &'a str,
    pub count: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// Distinct purposes, in the order they came, at most `MAX_PURPOSES` of them.
    pub purposes: Vec<&'a str>,
}

/// The most distinct purposes one write carries.
pub const fn max_purposes() -> usize {
    MAX_PURPOSES as usize
}

/// Adds leases to their connection's and caller's row. Purposes already on the row keep
/// their place; new ones follow until the row holds `MAX_PURPOSES`.
pub async fn add(db: impl PgExecutor<'_>, uses: &LeaseUses<'_>) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO lease_usage AS u (connection_id, caller, lease_count, first_used_at, \
         last_used_at, purposes) VALUES ($1, $2, $3, $4, $5, $6::text[]) \
         ON CONFLICT (connection_id, caller) DO UPDATE SET \
         lease_count = u.lease_count + EXCLUDED.lease_count, \
         first_used_at = LEAST(u.first_used_at, EXCLUDED.first_used_at), \
         last_used_at = GREATEST(u.last_used_at, EXCLUDED.last_used_at), \
         purposes = ARRAY(SELECT p FROM unnest(u.purposes || EXCLUDED.purposes) \
                          WITH ORDINALITY AS x(p, o) \
                          GROUP BY p ORDER BY min(o) LIMIT $7)",
    )
    .bind(uses.connection.0)
    .bind(uses.caller)
    .bind(uses.count)
    .bind(uses.first_at)
    .bind(uses.last_at)
    .bind(&uses.purposes)
    .bind(i64::from(MAX_PURPOSES))
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
