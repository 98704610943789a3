//! `authorization_states`: started authorizations, found by the SHA-256 of their state
//! (the state itself is never stored), used at most once.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::domain::{AppId, ConnectionId, Mode};
use crate::error::AuthError;
use crate::store::sealed_columns::SealedColumn;
use crate::token_vault::{Binding, Sealed};

/// The PKCE verifier, kept until the state is used or expires.
pub const PKCE_VERIFIER: SealedColumn = SealedColumn {
    table: "authorization_states",
    name: "pkce_verifier",
    id_column: "id",
};

pub fn pkce_binding(id: Uuid) -> Binding {
    PKCE_VERIFIER.binding(id)
}

/// A started authorization as first written.
pub struct NewAuthorizationState<'a> {
    pub id: Uuid,
    pub state_hash: &'a [u8],
    pub app_id: AppId,
    pub principal: &'a str,
    pub mode: Mode,
    pub redirect_uri: &'a str,
    pub scopes_version: u32,
    pub reconnect: Option<ConnectionId>,
    pub pkce_verifier: Option<&'a Sealed>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The service credential that started it.
    pub started_by: &'a str,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    state: &NewAuthorizationState<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO authorization_states (id, state_hash, app_id, principal, mode, redirect_uri, scopes_version, \
         reconnect_connection_id, pkce_verifier_ct, pkce_verifier_key_id, created_at, expires_at, started_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(state.id)
    .bind(state.state_hash)
    .bind(state.app_id.0)
    .bind(state.principal)
    .bind(state.mode.as_str())
    .bind(state.redirect_uri)
    .bind(i32::try_from(state.scopes_version).unwrap_or(i32::MAX))
    .bind(state.reconnect.map(|c| c.0))
    .bind(state.pkce_verifier.map(|s| s.ciphertext.clone()))
    .bind(state.pkce_verifier.map(|s| s.key_id.clone()))
    .bind(state.created_at)
    .bind(state.expires_at)
    .bind(state.started_by)
    .execute(db)
    .await?;
    Ok(())
}

/// Keeps Clio's authorize URL (without its `state`) for the web flow's start page.
pub async fn set_clio_authorize_url(
    db: impl PgExecutor<'_>,
    id: Uuid,
    url: &str,
) -> Result<(), AuthError> {
    sqlx::query("UPDATE authorization_states SET clio_authorize_url = $2 WHERE id = $1")
        .bind(id)
        .bind(url)
        .execute(db)
        .await?;
    Ok(())
}

/// Drops the PKCE verifiers of states expired by `now` (the rows stay, for the record of
/// what was started).
pub async fn forget_expired_verifiers(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE authorization_states SET pkce_verifier_ct = NULL, pkce_verifier_key_id = NULL \
         WHERE expires_at <= $1 AND pkce_verifier_ct IS NOT NULL",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Binds a live, unbound web state to a browser (by the SHA-256 of its cookie secret).
pub struct BrowserBinding<'a> {
    pub state_hash: &'a [u8],
    pub binding_hash: &'a [u8],
    pub at: DateTime<Utc>,
}

/// What the start page needs of a state it just bound.
#[derive(FromRow)]
pub struct Bound {
    /// Clio's authorize URL, without the state.
    pub clio_authorize_url: String,
    pub seconds_left: i64,
}

/// Binds the state to the browser if it is a live web state no browser opened yet (the
/// first browser wins); `None` when it is not.
pub async fn bind_browser(
    db: impl PgExecutor<'_>,
    binding: &BrowserBinding<'_>,
) -> Result<Option<Bound>, AuthError> {
    Ok(sqlx::query_as(
        "UPDATE authorization_states SET browser_binding_hash = $2, browser_bound_at = $3 \
         WHERE state_hash = $1 AND mode = $4 AND used_at IS NULL AND expires_at > $3 \
           AND browser_binding_hash IS NULL AND clio_authorize_url IS NOT NULL \
         RETURNING clio_authorize_url, extract(epoch FROM expires_at - $3)::bigint AS seconds_left",
    )
    .bind(binding.state_hash)
    .bind(binding.binding_hash)
    .bind(binding.at)
    .bind(Mode::Web.as_str())
    .fetch_optional(db)
    .await?)
}

/// Which state to use, and what the completer must match: each condition that is set
/// must hold, or the state is not used.
pub struct Consume<'a> {
    pub state_hash: &'a [u8],
    pub now: DateTime<Utc>,
    /// The service credential that started the state.
    pub started_by: Option<&'a str>,
    pub mode: Option<Mode>,
    /// The SHA-256 of the browser's cookie secret.
    pub browser_binding_hash: Option<&'a [u8]>,
}

/// A state just used.
#[derive(FromRow)]
pub struct ConsumedState {
    pub id: Uuid,
    pub app_id: Uuid,
    pub principal: String,
    pub mode: String,
    pub redirect_uri: String,
    pub scopes_version: i32,
    pub reconnect_connection_id: Option<Uuid>,
    /// Taken out of the row as the state is used: it is needed once.
    pub pkce_verifier_ct: Option<Vec<u8>>,
}

/// Marks an unused, unexpired state used if the completer matches it, taking its PKCE
/// verifier out of the row (locking the state's row first); `None` if nothing was used.
pub async fn consume(
    db: impl PgExecutor<'_>,
    consume: &Consume<'_>,
) -> Result<Option<ConsumedState>, AuthError> {
    Ok(sqlx::query_as(
        "UPDATE authorization_states s SET used_at = $2, pkce_verifier_ct = NULL, pkce_verifier_key_id = NULL \
         FROM (SELECT id, pkce_verifier_ct FROM authorization_states WHERE state_hash = $1 FOR UPDATE) old \
         WHERE s.id = old.id AND s.used_at IS NULL AND s.expires_at > $2 \
         AND ($3::text IS NULL OR s.started_by = $3) AND ($4::text IS NULL OR s.mode = $4) \
         AND ($5::bytea IS NULL OR s.browser_binding_hash = $5) \
         RETURNING s.id, s.app_id, s.principal, s.mode, s.redirect_uri, s.scopes_version, \
         s.reconnect_connection_id, old.pkce_verifier_ct",
    )
    .bind(consume.state_hash)
    .bind(consume.now)
    .bind(consume.started_by)
    .bind(consume.mode.map(Mode::as_str))
    .bind(consume.browser_binding_hash)
    .fetch_optional(db)
    .await?)
}

/// A state as stored, with its app's tenant: what tells why it could not be used.
#[derive(FromRow)]
pub struct SeenState {
    pub app_id: Uuid,
    pub tenant: String,
    pub principal: String,
    pub mode: String,
    pub started_by: Option<String>,
    pub used_at: Option<DateTime<Utc>>,
    pub browser_binding_hash: Option<Vec<u8>>,
    pub expires_at: DateTime<Utc>,
}

pub async fn find_by_hash(
    db: impl PgExecutor<'_>,
    state_hash: &[u8],
) -> Result<Option<SeenState>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT s.app_id, a.tenant, s.principal, s.mode, s.started_by, s.used_at, \
         s.browser_binding_hash, s.expires_at \
         FROM authorization_states s JOIN app_registrations a ON a.app_id = s.app_id \
         WHERE s.state_hash = $1",
    )
    .bind(state_hash)
    .fetch_optional(db)
    .await?)
}

/// How a used state ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    /// The person declined at Clio.
    Denied,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

pub async fn set_outcome(
    db: impl PgExecutor<'_>,
    id: Uuid,
    outcome: Outcome,
) -> Result<(), AuthError> {
    sqlx::query("UPDATE authorization_states SET outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome.as_str())
        .execute(db)
        .await?;
    Ok(())
}
