//! `app_registrations` and `app_scope_versions`: the registered Clio apps, and every
//! declared scope set each of them has had.

use chrono::{DateTime, Utc};
use clio_api::Region;
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::apps::{App, AppFilter, Rejection, Verdict};
use crate::domain::{AppId, AppStatus, DeclaredScopes};
use crate::error::AuthError;
use crate::paging::Page;
use crate::store::sealed_columns::SealedColumn;
use crate::store::{Inserted, inserted};
use crate::token_vault::{Binding, Sealed};

/// The app's Clio client secret.
pub const CLIENT_SECRET: SealedColumn = SealedColumn {
    table: "app_registrations",
    name: "client_secret",
    id_column: "app_id",
};

pub fn secret_binding(app: AppId) -> Binding {
    CLIENT_SECRET.binding(app)
}

#[derive(FromRow)]
struct AppRow {
    app_id: Uuid,
    tenant: String,
    name: String,
    region: String,
    client_id: String,
    client_secret_ct: Vec<u8>,
    redirect_uris: Vec<String>,
    declared_scopes: Json<DeclaredScopes>,
    scopes_version: i32,
    status: String,
    pkce_enabled: bool,
    registered_by: String,
    created_at: DateTime<Utc>,
    approved_by: Option<String>,
    approved_at: Option<DateTime<Utc>>,
    rejected_by: Option<String>,
    rejected_at: Option<DateTime<Utc>>,
    rejection_note: Option<String>,
}

const COLUMNS: &str = "app_id, tenant, name, region, client_id, client_secret_ct, redirect_uris, \
     declared_scopes, scopes_version, status, pkce_enabled, registered_by, created_at, \
     approved_by, approved_at, rejected_by, rejected_at, rejection_note";

impl TryFrom<AppRow> for App {
    type Error = AuthError;

    fn try_from(row: AppRow) -> Result<App, AuthError> {
        Ok(App {
            id: AppId(row.app_id),
            tenant: row.tenant,
            name: row.name,
            region: row
                .region
                .parse()
                .map_err(|e| AuthError::Internal(format!("app {}: {e}", row.app_id)))?,
            client_id: row.client_id,
            client_secret_ct: row.client_secret_ct,
            redirect_uris: row.redirect_uris,
            declared: row.declared_scopes.0,
            scopes_version: u32::try_from(row.scopes_version).unwrap_or(0),
            status: row.status.parse()?,
            pkce_enabled: row.pkce_enabled,
            registered_by: row.registered_by,
            created_at: row.created_at,
            approved_by: row.approved_by,
            approved_at: row.approved_at,
            rejection: match (row.rejected_by, row.rejected_at) {
                (Some(by), Some(at)) => Some(Rejection {
                    by,
                    at,
                    note: row.rejection_note.unwrap_or_default(),
                }),
                _ => None,
            },
        })
    }
}

/// A scope version as the columns store it.
fn version_column(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

/// Loads an app.
pub async fn load(db: impl PgExecutor<'_>, id: AppId) -> Result<App, AuthError> {
    let sql = format!("SELECT {COLUMNS} FROM app_registrations WHERE app_id = $1");
    fetch_one(db, &sql, id).await
}

/// Loads an app and locks its row (`FOR UPDATE`) until the caller's transaction ends.
pub async fn load_for_update(db: impl PgExecutor<'_>, id: AppId) -> Result<App, AuthError> {
    let sql = format!("SELECT {COLUMNS} FROM app_registrations WHERE app_id = $1 FOR UPDATE");
    fetch_one(db, &sql, id).await
}

async fn fetch_one(db: impl PgExecutor<'_>, sql: &str, id: AppId) -> Result<App, AuthError> {
    let row: Option<AppRow> = sqlx::query_as(sql).bind(id.0).fetch_optional(db).await?;
    row.ok_or_else(|| AuthError::NotFound(format!("app {id}")))?
        .try_into()
}

/// One page of apps matching `filter`, in id order (one row more than the page, see
/// [`Page::finish`]).
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &AppFilter,
    page: &Page,
) -> Result<Vec<App>, AuthError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM app_registrations \
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR region = $2) \
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR app_id > $4) \
         ORDER BY app_id LIMIT $5"
    );
    let rows: Vec<AppRow> = sqlx::query_as(&sql)
        .bind(filter.tenant.as_deref())
        .bind(filter.region.map(Region::as_str))
        .bind(filter.status.map(AppStatus::as_str))
        .bind(page.after)
        .bind(page.fetch_limit())
        .fetch_all(db)
        .await?;
    rows.into_iter().map(App::try_from).collect()
}

/// A registration as it is first written: pending approval, at scope version 1.
pub struct NewApp<'a> {
    pub id: AppId,
    pub tenant: &'a str,
    pub name: &'a str,
    pub region: Region,
    pub client_id: &'a str,
    pub client_secret: &'a Sealed,
    pub redirect_uris: &'a [String],
    pub declared: &'a DeclaredScopes,
    pub pkce_enabled: bool,
    pub registered_by: &'a str,
    pub created_at: DateTime<Utc>,
}

/// Inserts a registration; [`Inserted::Duplicate`] when its client id is registered in its
/// region already.
pub async fn insert(db: impl PgExecutor<'_>, app: &NewApp<'_>) -> Result<Inserted, AuthError> {
    let result = sqlx::query(
        "INSERT INTO app_registrations (app_id, tenant, name, region, client_id, client_secret_ct, \
         client_secret_key_id, redirect_uris, declared_scopes, scopes_version, status, pkce_enabled, \
         registered_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, 'pending_approval', $10, $11, $12)",
    )
    .bind(app.id.0)
    .bind(app.tenant)
    .bind(app.name)
    .bind(app.region.as_str())
    .bind(app.client_id)
    .bind(&app.client_secret.ciphertext)
    .bind(&app.client_secret.key_id)
    .bind(app.redirect_uris)
    .bind(Json(app.declared))
    .bind(app.pkce_enabled)
    .bind(app.registered_by)
    .bind(app.created_at)
    .execute(db)
    .await;
    inserted(result)
}

/// Who decided on an app (approved or rejected it), when, and what they noted.
pub struct Decision<'a> {
    pub by: &'a str,
    pub at: DateTime<Utc>,
    pub note: &'a str,
}

/// Records compliance's decision: approved (people may connect) or rejected.
pub async fn mark_decided(
    db: impl PgExecutor<'_>,
    id: AppId,
    verdict: Verdict,
    decision: &Decision<'_>,
) -> Result<(), AuthError> {
    let sql = match verdict {
        Verdict::Approve => {
            "UPDATE app_registrations SET status = 'approved', approved_by = $2, approved_at = $3, approval_note = $4 \
             WHERE app_id = $1"
        }
        Verdict::Reject => {
            "UPDATE app_registrations SET status = 'rejected', rejected_by = $2, rejected_at = $3, rejection_note = $4 \
             WHERE app_id = $1"
        }
    };
    sqlx::query(sql)
        .bind(id.0)
        .bind(decision.by)
        .bind(decision.at)
        .bind(decision.note)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets new declared scopes at `version`; the app waits for approval again.
pub async fn replace_declared_scopes(
    db: impl PgExecutor<'_>,
    id: AppId,
    declared: &DeclaredScopes,
    version: u32,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE app_registrations SET declared_scopes = $2, scopes_version = $3, status = 'pending_approval', \
         approved_by = NULL, approved_at = NULL, approval_note = NULL, \
         rejected_by = NULL, rejected_at = NULL, rejection_note = NULL WHERE app_id = $1",
    )
    .bind(id.0)
    .bind(Json(declared))
    .bind(version_column(version))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn replace_client_secret(
    db: impl PgExecutor<'_>,
    id: AppId,
    secret: &Sealed,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE app_registrations SET client_secret_ct = $2, client_secret_key_id = $3 \
         WHERE app_id = $1",
    )
    .bind(id.0)
    .bind(&secret.ciphertext)
    .bind(&secret.key_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Who revoked an app, when and why.
pub struct AppRevocation<'a> {
    pub by: &'a str,
    pub at: DateTime<Utc>,
    pub reason: &'a str,
}

pub async fn mark_revoked(
    db: impl PgExecutor<'_>,
    id: AppId,
    revocation: &AppRevocation<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE app_registrations SET status = 'revoked', revoked_by = $2, revoked_at = $3, revocation_reason = $4 \
         WHERE app_id = $1",
    )
    .bind(id.0)
    .bind(revocation.by)
    .bind(revocation.at)
    .bind(revocation.reason)
    .execute(db)
    .await?;
    Ok(())
}

/// One entry of `app_scope_versions`: a declared scope set an app had, and why.
pub struct ScopeVersion<'a> {
    pub app: AppId,
    pub version: u32,
    pub declared: &'a DeclaredScopes,
    pub changed_by: &'a str,
    pub reason: &'a str,
    pub changed_at: DateTime<Utc>,
}

pub async fn insert_scope_version(
    db: impl PgExecutor<'_>,
    version: &ScopeVersion<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO app_scope_versions (app_id, scopes_version, declared_scopes, changed_by, reason, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(version.app.0)
    .bind(version_column(version.version))
    .bind(Json(version.declared))
    .bind(version.changed_by)
    .bind(version.reason)
    .bind(version.changed_at)
    .execute(db)
    .await?;
    Ok(())
}
