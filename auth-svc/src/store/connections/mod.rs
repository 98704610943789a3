//! `connections`: one person's authorization of one app, and the tokens Clio issued for it.
//!
//! Every write that changes the tokens bumps `token_version`, so a writer that read the
//! row earlier can tell (`... AND token_version = $n`) whether someone else changed them
//! since. A refresh *claim* (`refresh_claim`, `refresh_claimed_until` on the database's
//! clock) lets one replica at a time refresh a connection without holding a row lock:
//! the statements of the refresh are in [`refresh`].

pub mod refresh;

use chrono::{DateTime, Utc};
use clio_api::Region;
use scope_catalog::ScopeSet;
use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor, Postgres};
use uuid::Uuid;

use crate::connections::{Connection, ConnectionFilter};
use crate::domain::{AppId, ConnectionId, ConnectionStatus, DeclaredScopes};
use crate::error::AuthError;
use crate::paging::Page;
use crate::store::sealed_columns::SealedColumn;
use crate::store::{Inserted, inserted};
use crate::token_vault::{Binding, Sealed};

pub const ACCESS_TOKEN: SealedColumn = SealedColumn {
    table: "connections",
    name: "access_token",
    id_column: "connection_id",
};

pub const REFRESH_TOKEN: SealedColumn = SealedColumn {
    table: "connections",
    name: "refresh_token",
    id_column: "connection_id",
};

pub fn access_binding(id: ConnectionId) -> Binding {
    ACCESS_TOKEN.binding(id)
}

pub fn refresh_binding(id: ConnectionId) -> Binding {
    REFRESH_TOKEN.binding(id)
}

#[derive(FromRow)]
struct ConnectionRow {
    connection_id: Uuid,
    tenant: String,
    app_id: Uuid,
    principal: String,
    region: String,
    clio_user_id: String,
    clio_user_name: String,
    clio_user_email: String,
    clio_account_id: String,
    clio_account_name: String,
    granted_scopes: Json<ScopeSet>,
    granted_scopes_version: i32,
    status: String,
    access_token_ct: Option<Vec<u8>>,
    refresh_token_ct: Option<Vec<u8>>,
    access_expires_at: Option<DateTime<Utc>>,
    token_lifetime_secs: Option<i64>,
    token_version: i64,
    granted_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<String>,
    revocation_reason: Option<String>,
    app_declared: Json<DeclaredScopes>,
    app_client_id: String,
}

/// A connection with its app's current declared scopes (to tell drift).
const SELECT: &str = "SELECT c.connection_id, c.tenant, c.app_id, c.principal, c.region, c.clio_user_id, \
     c.clio_user_name, c.clio_user_email, c.clio_account_id, c.clio_account_name, c.granted_scopes, \
     c.granted_scopes_version, c.status, c.access_token_ct, c.refresh_token_ct, c.access_expires_at, \
     c.token_lifetime_secs, c.token_version, c.granted_at, c.last_used_at, c.revoked_at, c.revoked_by, \
     c.revocation_reason, a.declared_scopes AS app_declared, a.client_id AS app_client_id \
     FROM connections c JOIN app_registrations a ON a.app_id = c.app_id";

impl TryFrom<ConnectionRow> for Connection {
    type Error = AuthError;

    fn try_from(row: ConnectionRow) -> Result<Self, AuthError> {
        Ok(Connection {
            id: ConnectionId(row.connection_id),
            tenant: row.tenant,
            app_id: AppId(row.app_id),
            principal: row.principal,
            region: row.region.parse().map_err(|e| {
                AuthError::Internal(format!("connection {}: {e}", row.connection_id))
            })?,
            clio_user_id: row.clio_user_id,
            clio_user_name: row.clio_user_name,
            clio_user_email: row.clio_user_email,
            clio_account_id: row.clio_account_id,
            clio_account_name: row.clio_account_name,
            granted: row.granted_scopes.0,
            granted_version: u32::try_from(row.granted_scopes_version).unwrap_or(0),
            status: row.status.parse()?,
            access_token_ct: row.access_token_ct,
            refresh_token_ct: row.refresh_token_ct,
            access_expires_at: row.access_expires_at,
            token_lifetime_secs: row.token_lifetime_secs,
            token_version: row.token_version,
            granted_at: row.granted_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
            revocation_reason: row.revocation_reason,
            app_declared: row.app_declared.0.scope_set(),
            app_client_id: row.app_client_id,
        })
    }
}

/// Loads one connection.
pub async fn load(db: impl PgExecutor<'_>, id: ConnectionId) -> Result<Connection, AuthError> {
    fetch_one(db, &format!("{SELECT} WHERE c.connection_id = $1"), id).await
}

/// Loads one connection and locks its row (`FOR UPDATE OF c`, not the app's) until the
/// caller's transaction ends.
pub async fn load_for_update(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
) -> Result<Connection, AuthError> {
    let sql = format!("{SELECT} WHERE c.connection_id = $1 FOR UPDATE OF c");
    fetch_one(db, &sql, id).await
}

async fn fetch_one(
    db: impl PgExecutor<'_>,
    sql: &str,
    id: ConnectionId,
) -> Result<Connection, AuthError> {
    let row: Option<ConnectionRow> = sqlx::query_as(sql).bind(id.0).fetch_optional(db).await?;
    row.ok_or_else(|| AuthError::NotFound(format!("connection {id}")))?
        .try_into()
}

/// One page of connections matching `filter`, in id order (one row more than the page,
/// see [`Page::finish`]).
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &ConnectionFilter,
    page: &Page,
) -> Result<Vec<Connection>, AuthError> {
    let sql = format!(
        "{SELECT} WHERE ($1::text IS NULL OR c.tenant = $1) AND ($2::uuid IS NULL OR c.app_id = $2) \
           AND ($3::text IS NULL OR c.principal = $3) AND ($4::text IS NULL OR c.status = $4) \
           AND ($5::text IS NULL OR c.region = $5) AND ($6::uuid IS NULL OR c.connection_id > $6) \
         ORDER BY c.connection_id LIMIT $7"
    );
    let rows: Vec<ConnectionRow> = sqlx::query_as(&sql)
        .bind(filter.tenant.as_deref())
        .bind(filter.app_id.map(|a| a.0))
        .bind(filter.principal.as_deref())
        .bind(filter.status.map(ConnectionStatus::as_str))
        .bind(filter.region.map(Region::as_str))
        .bind(page.after)
        .bind(page.fetch_limit())
        .fetch_all(db)
        .await?;
    rows.into_iter().map(Connection::try_from).collect()
}

/// The live (not revoked) connection of this person, app and Clio user, if any.
pub async fn find_live(
    db: impl PgExecutor<'_>,
    app: AppId,
    principal: &str,
    clio_user_id: &str,
) -> Result<Option<ConnectionId>, AuthError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT connection_id FROM connections \
         WHERE app_id = $1 AND principal = $2 AND clio_user_id = $3 AND status <> 'revoked'",
    )
    .bind(app.0)
    .bind(principal)
    .bind(clio_user_id)
    .fetch_optional(db)
    .await?;
    Ok(id.map(ConnectionId))
}

/// The live connections of a person (of one tenant, or of all), with their tenants, in id
/// order.
pub async fn live_of_principal(
    db: impl PgExecutor<'_>,
    principal: &str,
    tenant: Option<&str>,
) -> Result<Vec<(ConnectionId, String)>, AuthError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT connection_id, tenant FROM connections WHERE principal = $1 AND ($2::text IS NULL OR tenant = $2) \
         AND status <> 'revoked' ORDER BY connection_id",
    )
    .bind(principal)
    .bind(tenant)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, tenant)| (ConnectionId(id), tenant))
        .collect())
}

/// The live connections made through an app, in id order.
pub async fn live_of_app(
    db: impl PgExecutor<'_>,
    app: AppId,
) -> Result<Vec<ConnectionId>, AuthError> {
    let ids: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT connection_id FROM connections WHERE app_id = $1 AND status <> 'revoked' ORDER BY connection_id",
    )
    .bind(app.0)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(|(id,)| ConnectionId(id)).collect())
}

/// What a live connection was granted, for telling it from the app's declared scopes.
#[derive(FromRow)]
pub struct LiveGrant {
    pub connection_id: Uuid,
    pub principal: String,
    pub clio_user_id: String,
    pub clio_account_id: String,
    #[sqlx(rename = "granted_scopes")]
    pub granted: Json<ScopeSet>,
    #[sqlx(rename = "granted_scopes_version")]
    pub granted_version: i32,
}

/// The grants of the live connections made through an app, in id order.
pub async fn live_grants_of_app(
    db: impl PgExecutor<'_>,
    app: AppId,
) -> Result<Vec<LiveGrant>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT connection_id, principal, clio_user_id, clio_account_id, granted_scopes, granted_scopes_version \
         FROM connections WHERE app_id = $1 AND status <> 'revoked' ORDER BY connection_id",
    )
    .bind(app.0)
    .fetch_all(db)
    .await?)
}

/// A Clio login: one Clio user of one Clio account in one region.
pub struct ClioLogin<'a> {
    pub region: Region,
    pub account_id: &'a str,
    pub user_id: &'a str,
}

/// Takes the transaction-scoped advisory lock on a Clio login (the two-key form, whose key
/// space the outbox's one-key lock does not share), held until the caller's transaction
/// ends.
pub async fn lock_clio_login(
    db: impl PgExecutor<'_>,
    login: &ClioLogin<'_>,
) -> Result<(), AuthError> {
    let key = format!(
        "{}/{}/{}",
        login.region.as_str(),
        login.account_id,
        login.user_id
    );
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('auth-svc:clio-login'), hashtext($1))")
        .bind(&key)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether a live connection of a principal other than `principal` holds the login,
/// through any app.
pub async fn clio_login_held_by_other(
    db: impl PgExecutor<'_>,
    login: &ClioLogin<'_>,
    principal: &str,
) -> Result<bool, AuthError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM connections WHERE region = $1 AND clio_account_id = $2 \
         AND clio_user_id = $3 AND principal <> $4 AND status <> 'revoked')",
    )
    .bind(login.region.as_str())
    .bind(login.account_id)
    .bind(login.user_id)
    .bind(principal)
    .fetch_one(db)
    .await?)
}

/// What a completed authorization writes into its connection, new or reconnected.
pub struct Grant<'a> {
    pub clio_user_name: &'a str,
    pub clio_user_email: &'a str,
    pub clio_account_id: &'a str,
    pub clio_account_name: &'a str,
    pub scopes: &'a ScopeSet,
    pub scopes_version: u32,
    pub access_token: &'a Sealed,
    pub refresh_token: &'a Sealed,
    pub access_expires_at: DateTime<Utc>,
    pub token_lifetime_secs: i64,
    pub granted_at: DateTime<Utc>,
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

impl<'a> Grant<'a> {
    /// Binds, after the parameters `query` already has: clio_user_name, clio_user_email,
    /// clio_account_id, clio_account_name, granted_scopes, granted_scopes_version,
    /// access_token_ct, access_token_key_id, refresh_token_ct, refresh_token_key_id,
    /// access_expires_at, token_lifetime_secs, and the time of the grant.
    fn bind(&self, query: PgQuery<'a>) -> PgQuery<'a> {
        query
            .bind(self.clio_user_name)
            .bind(self.clio_user_email)
            .bind(self.clio_account_id)
            .bind(self.clio_account_name)
            .bind(Json(self.scopes))
            .bind(i32::try_from(self.scopes_version).unwrap_or(i32::MAX))
            .bind(&self.access_token.ciphertext)
            .bind(&self.access_token.key_id)
            .bind(&self.refresh_token.ciphertext)
            .bind(&self.refresh_token.key_id)
            .bind(self.access_expires_at)
            .bind(self.token_lifetime_secs)
            .bind(self.granted_at)
    }
}

/// A connection as first written: active, with its grant.
pub struct NewConnection<'a> {
    pub id: ConnectionId,
    pub tenant: &'a str,
    pub app_id: AppId,
    pub principal: &'a str,
    pub region: Region,
    pub clio_user_id: &'a str,
    pub grant: Grant<'a>,
}

/// Inserts an active connection; [`Inserted::Duplicate`] when this person, app and Clio
/// user have a live one already.
pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewConnection<'_>,
) -> Result<Inserted, AuthError> {
    let insert = sqlx::query(
        "INSERT INTO connections (connection_id, tenant, app_id, principal, region, clio_user_id, clio_user_name, \
         clio_user_email, clio_account_id, clio_account_name, granted_scopes, granted_scopes_version, status, \
         access_token_ct, access_token_key_id, refresh_token_ct, refresh_token_key_id, access_expires_at, \
         token_lifetime_secs, refreshed_at, granted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', $13, $14, $15, $16, $17, $18, $19, $19)",
    )
    .bind(new.id.0)
    .bind(new.tenant)
    .bind(new.app_id.0)
    .bind(new.principal)
    .bind(new.region.as_str())
    .bind(new.clio_user_id);
    inserted(new.grant.bind(insert).execute(db).await)
}

/// Replaces the grant of an existing connection (a reconnect): active again, with the new
/// identity, scopes and tokens.
pub async fn reconnect(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    grant: &Grant<'_>,
) -> Result<(), AuthError> {
    let update = sqlx::query(
        "UPDATE connections SET status = 'active', clio_user_name = $2, clio_user_email = $3, \
         clio_account_id = $4, clio_account_name = $5, granted_scopes = $6, granted_scopes_version = $7, \
         access_token_ct = $8, access_token_key_id = $9, refresh_token_ct = $10, refresh_token_key_id = $11, \
         access_expires_at = $12, token_lifetime_secs = $13, token_version = token_version + 1, \
         refreshed_at = $14, reconnected_at = $14 WHERE connection_id = $1",
    );
    grant.bind(update.bind(id.0)).execute(db).await?;
    Ok(())
}

/// Who revoked a connection, when and why.
pub struct ConnectionRevocation<'a> {
    pub at: DateTime<Utc>,
    pub by: &'a str,
    pub reason: &'a str,
}

/// Marks the connection revoked and drops its tokens from the row.
pub async fn mark_revoked(
    db: impl PgExecutor<'_>,
    id: ConnectionId,
    revocation: &ConnectionRevocation<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE connections SET status = 'revoked', revoked_at = $2, revoked_by = $3, revocation_reason = $4, \
         access_token_ct = NULL, access_token_key_id = NULL, refresh_token_ct = NULL, refresh_token_key_id = NULL, \
         token_version = token_version + 1 WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(revocation.at)
    .bind(revocation.by)
    .bind(revocation.reason)
    .execute(db)
    .await?;
    Ok(())
}

/// Moves connections' last-used times forward (never back) to the latest of `uses`.
pub async fn record_last_used(
    db: impl PgExecutor<'_>,
    uses: &[(Uuid, DateTime<Utc>)],
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE connections c SET last_used_at = GREATEST(COALESCE(c.last_used_at, u.at), u.at) \
         FROM (SELECT id, max(at) AS at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) \
               GROUP BY id) AS u WHERE c.connection_id = u.id",
    )
    .bind(uses.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(uses.iter().map(|(_, at)| *at).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}
