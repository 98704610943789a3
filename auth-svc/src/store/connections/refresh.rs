//! The refresh of `connections` rows (migration `0008_refresh_claims`): the claim that
//! lets one replica at a time refresh a connection, the tokens a refresh writes, the
//! connection a refused refresh leaves needing a reconnect, and the failure backoff that
//! keeps failing connections from crowding out the rest.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{AppId, ConnectionId};
use crate::error::AuthError;
use crate::token_vault::Sealed;

/// A claim on a connection's refresh.
pub struct RefreshClaim {
    pub connection: ConnectionId,
    pub claim: Uuid,
    /// How long the claim holds, on the database's clock.
    pub hold_secs: f64,
    /// The token the claimer read: the claim is taken only if it is still the stored one.
    pub token_version: i64,
}

/// Takes the refresh of an active connection if nobody holds it (or their claim ran out)
/// and the token is still the one read. Whether it was taken.
pub async fn claim(db: impl PgExecutor<'_>, claim: &RefreshClaim) -> Result<bool, AuthError> {
    let claimed = sqlx::query(
        "UPDATE connections SET refresh_claim = $2, \
         refresh_claimed_until = clock_timestamp() + make_interval(secs => $3) \
         WHERE connection_id = $1 AND status = 'active' AND token_version = $4 \
         AND (refresh_claimed_until IS NULL OR refresh_claimed_until <= clock_timestamp())",
    )
    .bind(claim.connection.0)
    .bind(claim.claim)
    .bind(claim.hold_secs)
    .bind(claim.token_version)
    .execute(db)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Tokens a refresh returned.
pub struct RefreshedTokens<'a> {
    pub connection: ConnectionId,
    pub access_token: &'a Sealed,
    /// Set only when Clio rotated the refresh token; otherwise the stored one stays.
    pub refresh_token: Option<&'a Sealed>,
    pub access_expires_at: DateTime<Utc>,
    pub token_lifetime_secs: i64,
    pub refreshed_at: DateTime<Utc>,
    /// The token the refresh started from.
    pub from_version: i64,
}

/// Writes refreshed tokens, releases the refresh claim and clears the failure backoff;
/// only over the token the refresh started from, on an active connection (a reconnect or
/// revocation meanwhile wins). Whether they were written.
pub async fn replace_tokens(
    db: impl PgExecutor<'_>,
    tokens: &RefreshedTokens<'_>,
) -> Result<bool, AuthError> {
    let updated = sqlx::query(
        "UPDATE connections SET access_token_ct = $2, access_token_key_id = $3, \
         refresh_token_ct = COALESCE($4, refresh_token_ct), refresh_token_key_id = COALESCE($5, refresh_token_key_id), \
         access_expires_at = $6, token_lifetime_secs = $7, token_version = token_version + 1, refreshed_at = $8, \
         refresh_claim = NULL, refresh_claimed_until = NULL, refresh_failures = 0, \
         next_refresh_attempt_at = NULL, last_refresh_error = NULL \
         WHERE connection_id = $1 AND status = 'active' AND token_version = $9",
    )
    .bind(tokens.connection.0)
    .bind(&tokens.access_token.ciphertext)
    .bind(&tokens.access_token.key_id)
    .bind(tokens.refresh_token.map(|s| s.ciphertext.clone()))
    .bind(tokens.refresh_token.map(|s| s.key_id.clone()))
    .bind(tokens.access_expires_at)
    .bind(tokens.token_lifetime_secs)
    .bind(tokens.refreshed_at)
    .bind(tokens.from_version)
    .execute(db)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Gives a refresh claim back without counting a failure (if it is still `claim`).
pub async fn release_claim(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    claim: Uuid,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE connections SET refresh_claim = NULL, refresh_claimed_until = NULL \
         WHERE connection_id = $1 AND refresh_claim = $2",
    )
    .bind(id.0)
    .bind(claim)
    .execute(db)
    .await?;
    Ok(())
}

/// A failed refresh, and how long the proactive refresher waits before the next one.
pub struct RefreshFailure<'a> {
    pub at: DateTime<Utc>,
    /// The wait after the first failure; it doubles per consecutive failure...
    pub backoff_secs: f64,
    /// ...up to this.
    pub max_backoff_secs: f64,
    /// What went wrong, never holding a secret.
    pub error: &'a str,
}

/// Gives a refresh claim back (if it is still `claim`), counts the failure and sets when
/// the proactive refresher may try again.
pub async fn release_claim_after_failure(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    claim: Uuid,
    failure: &RefreshFailure<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE connections SET refresh_claim = NULL, refresh_claimed_until = NULL, \
         refresh_failures = refresh_failures + 1, \
         next_refresh_attempt_at = $3 + make_interval(secs => LEAST($4 * power(2, LEAST(refresh_failures, 30)), $5)), \
         last_refresh_error = $6 \
         WHERE connection_id = $1 AND refresh_claim = $2",
    )
    .bind(id.0)
    .bind(claim)
    .bind(failure.at)
    .bind(failure.backoff_secs)
    .bind(failure.max_backoff_secs)
    .bind(failure.error)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks an active connection as needing the person to reconnect and drops its dead
/// tokens (releasing any refresh claim), only if its token is still `token_version`.
/// Whether it was marked.
pub async fn mark_needs_reconnect(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    token_version: i64,
) -> Result<bool, AuthError> {
    let marked = sqlx::query(
        "UPDATE connections SET status = 'needs_reconnect', access_token_ct = NULL, access_token_key_id = NULL, \
         refresh_token_ct = NULL, refresh_token_key_id = NULL, token_version = token_version + 1, \
         refresh_claim = NULL, refresh_claimed_until = NULL \
         WHERE connection_id = $1 AND status = 'active' AND token_version = $2",
    )
    .bind(id.0)
    .bind(token_version)
    .execute(db)
    .await?
    .rows_affected();
    Ok(marked == 1)
}

/// Which connections the proactive refresher takes.
pub struct DueForRefresh {
    pub now: DateTime<Utc>,
    /// The margin before expiry: this share of the token's lifetime...
    pub margin_ratio: f64,
    /// ...capped at this.
    pub max_margin_secs: f64,
    pub limit: i64,
}

/// Active connections inside their refresh margin whose failure backoff has run out and
/// whose refresh nobody holds: those that have not been failing first, then the earliest
/// to expire.
pub async fn due(
    db: impl PgExecutor<'_>,
    due: &DueForRefresh,
) -> Result<Vec<ConnectionId>, AuthError> {
    let ids: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT connection_id FROM connections WHERE status = 'active' \
         AND access_expires_at - make_interval(secs => LEAST(COALESCE(token_lifetime_secs, 3600) * $2, $3)) <= $1 \
         AND (next_refresh_attempt_at IS NULL OR next_refresh_attempt_at <= $1) \
         AND (refresh_claimed_until IS NULL OR refresh_claimed_until <= clock_timestamp()) \
         ORDER BY refresh_failures, access_expires_at LIMIT $4",
    )
    .bind(due.now)
    .bind(due.margin_ratio)
    .bind(due.max_margin_secs)
    .bind(due.limit)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(|(id,)| ConnectionId(id)).collect())
}

/// Clears the refresh failure backoff of an app's live connections, so they refresh at
/// once. How many were waiting.
pub async fn clear_backoff_of_app(db: impl PgExecutor<'_>, app: AppId) -> Result<u64, AuthError> {
    Ok(sqlx::query(
        "UPDATE connections SET refresh_failures = 0, next_refresh_attempt_at = NULL \
         WHERE app_id = $1 AND status <> 'revoked' AND refresh_failures > 0",
    )
    .bind(app.0)
    .execute(db)
    .await?
    .rows_affected())
}
