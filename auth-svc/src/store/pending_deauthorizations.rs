//! `pending_deauthorizations`: the tokens of revoked connections, kept sealed only until
//! Clio confirms the deauthorize, so a failed call can be retried.

use chrono::{DateTime, Utc};
use clio_api::Region;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::domain::{AppId, ConnectionId};
use crate::error::AuthError;
use crate::store::sealed_columns::SealedColumn;
use crate::token_vault::{Binding, Sealed};

pub const ACCESS_TOKEN: SealedColumn = SealedColumn {
    table: "pending_deauthorizations",
    name: "access_token",
    id_column: "connection_id",
};

pub const REFRESH_TOKEN: SealedColumn = SealedColumn {
    table: "pending_deauthorizations",
    name: "refresh_token",
    id_column: "connection_id",
};

pub fn access_binding(id: ConnectionId) -> Binding {
    ACCESS_TOKEN.binding(id)
}

pub fn refresh_binding(id: ConnectionId) -> Binding {
    REFRESH_TOKEN.binding(id)
}

/// A revoked connection's tokens, kept for the deauthorize at Clio.
pub struct NewPendingDeauthorization<'a> {
    pub connection: ConnectionId,
    pub region: Region,
    pub app_id: AppId,
    pub access_token: &'a Sealed,
    pub refresh_token: Option<&'a Sealed>,
    pub revoked_by: &'a str,
    pub revocation_reason: &'a str,
    pub revoked_at: DateTime<Utc>,
    /// When the retry worker may take it, should the first attempt not settle it.
    pub next_attempt_at: DateTime<Utc>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    pending: &NewPendingDeauthorization<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO pending_deauthorizations (connection_id, region, app_id, access_token_ct, access_token_key_id, \
         refresh_token_ct, refresh_token_key_id, revoked_by, revocation_reason, revoked_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(pending.connection.0)
    .bind(pending.region.as_str())
    .bind(pending.app_id.0)
    .bind(&pending.access_token.ciphertext)
    .bind(&pending.access_token.key_id)
    .bind(pending.refresh_token.map(|s| s.ciphertext.clone()))
    .bind(pending.refresh_token.map(|s| s.key_id.clone()))
    .bind(pending.revoked_by)
    .bind(pending.revocation_reason)
    .bind(pending.revoked_at)
    .bind(pending.next_attempt_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Locks the connection's row (`FOR UPDATE`, waiting for whoever holds it) and says
/// whether its CONNECTION_REVOKED event was recorded; `None` once the row is gone.
pub async fn lock_event_recorded(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
) -> Result<Option<bool>, AuthError> {
    let recorded: Option<(bool,)> = sqlx::query_as(
        "SELECT revoke_event_recorded FROM pending_deauthorizations WHERE connection_id = $1 FOR UPDATE",
    )
    .bind(id.0)
    .fetch_optional(db)
    .await?;
    Ok(recorded.map(|(recorded,)| recorded))
}

/// Drops the kept tokens: Clio is done with them (or the worker gave up).
pub async fn delete(db: impl PgExecutor<'_>, id: ConnectionId) -> Result<(), AuthError> {
    sqlx::query("DELETE FROM pending_deauthorizations WHERE connection_id = $1")
        .bind(id.0)
        .execute(db)
        .await?;
    Ok(())
}

/// Replaces the kept tokens (an attempt refreshed them at Clio).
pub async fn replace_tokens(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    access_token: &Sealed,
    refresh_token: Option<&Sealed>,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE pending_deauthorizations SET access_token_ct = $2, access_token_key_id = $3, \
         refresh_token_ct = $4, refresh_token_key_id = $5 WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(&access_token.ciphertext)
    .bind(&access_token.key_id)
    .bind(refresh_token.map(|s| s.ciphertext.clone()))
    .bind(refresh_token.map(|s| s.key_id.clone()))
    .execute(db)
    .await?;
    Ok(())
}

/// Records the revocation's own, failed attempt: one attempt made, its event recorded.
pub async fn record_first_failure(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    last_error: &str,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE pending_deauthorizations SET revoke_event_recorded = true, attempts = 1, last_error = $2 \
         WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(last_error)
    .execute(db)
    .await?;
    Ok(())
}

/// Rows due by `now`, the longest waiting first.
pub async fn due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ConnectionId>, AuthError> {
    let due: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT connection_id FROM pending_deauthorizations WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(due.into_iter().map(|(id,)| ConnectionId(id)).collect())
}

/// A kept deauthorization, as the retry worker reads it.
#[derive(FromRow)]
pub struct PendingDeauthorization {
    pub region: String,
    pub app_id: Uuid,
    pub access_token_ct: Vec<u8>,
    pub refresh_token_ct: Option<Vec<u8>>,
    pub revoke_event_recorded: bool,
    pub revoked_by: String,
    pub revocation_reason: String,
    pub revoked_at: DateTime<Utc>,
    pub attempts: i32,
}

/// The row, if it is due by `now` and nobody else holds it (`FOR UPDATE SKIP LOCKED`:
/// replicas share the work without doing a row twice).
pub async fn lock_if_due(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    now: DateTime<Utc>,
) -> Result<Option<PendingDeauthorization>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT region, app_id, access_token_ct, refresh_token_ct, revoke_event_recorded, revoked_by, \
         revocation_reason, revoked_at, attempts FROM pending_deauthorizations \
         WHERE connection_id = $1 AND next_attempt_at <= $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(id.0)
    .bind(now)
    .fetch_optional(db)
    .await?)
}

/// A failed retry, and when to try again.
pub struct NextAttempt<'a> {
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub last_error: &'a str,
    pub at: DateTime<Utc>,
}

/// Records a failed retry (its event is recorded by then) and schedules the next.
pub async fn schedule_retry(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    next: &NextAttempt<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE pending_deauthorizations SET attempts = $2, last_error = $3, next_attempt_at = $4, \
         revoke_event_recorded = true WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(next.attempts)
    .bind(next.last_error)
    .bind(next.at)
    .execute(db)
    .await?;
    Ok(())
}
