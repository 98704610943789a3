//! `lease_usage`: leases aggregated per connection and caller until the next flush.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::domain::ConnectionId;
use crate::error::AuthError;

/// Distinct purposes kept per row (a job id each); beyond this only the count grows.
const MAX_PURPOSES: i32 = 20;

/// Leases handed out to one caller for one connection, written together, each read from
/// the connection at `token_version`.
pub struct LeaseUses<'a> {
    pub connection: ConnectionId,
    pub token_version: i64,
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

/// Adds each group of leases to its connection's and caller's row, all in one statement
/// (so one commit), but only the groups whose connection is still active at their
/// `token_version` as the statement reads the row: a connection revoked, disconnected or
/// given new tokens since its leases read it is not leased from what they read. Returns,
/// for each group (in order), whether it was written.
///
/// Purposes already on a row keep their place; new ones follow until the row holds
/// `MAX_PURPOSES`. Groups of one connection and caller differ in their version, so at
/// most one of them matches the row and no row is written twice.
pub async fn add_if_current(
    db: impl PgExecutor<'_>,
    groups: &[LeaseUses<'_>],
) -> Result<Vec<bool>, AuthError> {
    let mut purpose_groups = Vec::new();
    let mut purposes = Vec::new();
    for (group, uses) in (0_i32..).zip(groups) {
        purpose_groups.extend(std::iter::repeat_n(group, uses.purposes.len()));
        purposes.extend_from_slice(&uses.purposes);
    }
    let written: Vec<i32> = sqlx::query_scalar(
        "WITH lease AS ( \
             SELECT * FROM UNNEST($1::int4[], $2::uuid[], $3::int8[], $4::text[], $5::int8[], \
                                  $6::timestamptz[], $7::timestamptz[]) \
             AS l(g, connection_id, token_version, caller, lease_count, first_used_at, last_used_at)), \
         usable AS ( \
             SELECT l.* FROM lease l JOIN connections c ON c.connection_id = l.connection_id \
             WHERE c.status = 'active' AND c.token_version = l.token_version), \
         written AS ( \
             INSERT INTO lease_usage AS u (connection_id, caller, lease_count, first_used_at, \
                                           last_used_at, purposes) \
             SELECT s.connection_id, s.caller, s.lease_count, s.first_used_at, s.last_used_at, \
                    ARRAY(SELECT p.purpose FROM UNNEST($8::int4[], $9::text[]) WITH ORDINALITY \
                          AS p(g, purpose, o) WHERE p.g = s.g ORDER BY p.o) \
             FROM usable s \
             ON CONFLICT (connection_id, caller) DO UPDATE SET \
             lease_count = u.lease_count + EXCLUDED.lease_count, \
             first_used_at = LEAST(u.first_used_at, EXCLUDED.first_used_at), \
             last_used_at = GREATEST(u.last_used_at, EXCLUDED.last_used_at), \
             purposes = ARRAY(SELECT p FROM unnest(u.purposes || EXCLUDED.purposes) \
                              WITH ORDINALITY AS x(p, o) \
                              GROUP BY p ORDER BY min(o) LIMIT $10)) \
         SELECT g FROM usable",
    )
    .bind((0_i32..).take(groups.len()).collect::<Vec<_>>())
    .bind(groups.iter().map(|u| u.connection.0).collect::<Vec<_>>())
    .bind(groups.iter().map(|u| u.token_version).collect::<Vec<_>>())
    .bind(groups.iter().map(|u| u.caller).collect::<Vec<_>>())
    .bind(groups.iter().map(|u| u.count).collect::<Vec<_>>())
    .bind(groups.iter().map(|u| u.first_at).collect::<Vec<_>>())
    .bind(groups.iter().map(|u| u.last_at).collect::<Vec<_>>())
    .bind(purpose_groups)
    .bind(purposes)
    .bind(i64::from(MAX_PURPOSES))
    .fetch_all(db)
    .await?;
    let mut current = vec![false; groups.len()];
    for group in written {
        if let Some(slot) = usize::try_from(group).ok().and_then(|g| current.get_mut(g)) {
            *slot = true;
        }
    }
    Ok(current)
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
