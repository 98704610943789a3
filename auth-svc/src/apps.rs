//! App registrations: a Clio developer app per region with its declared, justified scopes,
//! approved by compliance before anyone may connect through it. Changing the declared
//! scopes bumps the version, needs a new approval and marks older grants as drifted.

use chrono::{DateTime, Utc};
use clio_api::{AppCredentials, Region};
use proto::auth::v1 as pb;
use proto::common::v1::{EventKind, EventRefs, subject};
use scope_catalog::{Scope, ScopeSet};
use secrecy::SecretString;
use service_runtime::Caller;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::audit_events::{EventBuilder, service_actor, subject_of, timestamp};
use crate::context::Context;
use crate::domain::{AppId, AppStatus, DeclaredScope, DeclaredScopes, Tenant, required_text};
use crate::error::AuthError;
use crate::paging::Page;
use crate::token_vault::{Binding, TokenVault};

pub const SECRET_BINDING: (&str, &str) = ("app_registrations", "client_secret");

pub fn secret_binding(app: AppId) -> Binding {
    Binding::new(SECRET_BINDING.0, SECRET_BINDING.1, app)
}

/// A registration as stored.
#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    pub tenant: String,
    pub name: String,
    pub region: Region,
    pub client_id: String,
    client_secret_ct: Vec<u8>,
    pub redirect_uris: Vec<String>,
    pub declared: DeclaredScopes,
    pub scopes_version: u32,
    pub status: AppStatus,
    pub pkce_enabled: bool,
    pub registered_by: String,
    pub created_at: DateTime<Utc>,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
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
}

const COLUMNS: &str = "app_id, tenant, name, region, client_id, client_secret_ct, redirect_uris, \
     declared_scopes, scopes_version, status, pkce_enabled, registered_by, created_at, \
     approved_by, approved_at";

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
        })
    }
}

impl App {
    pub fn scope_set(&self) -> ScopeSet {
        self.declared.scope_set()
    }

    /// The client id and the decrypted secret, for calls to Clio's token endpoint.
    pub fn credentials(&self, vault: &TokenVault) -> Result<AppCredentials, AuthError> {
        Ok(AppCredentials {
            client_id: self.client_id.clone(),
            client_secret: vault.open(&self.client_secret_ct, &secret_binding(self.id))?,
        })
    }

    pub fn to_wire(&self) -> pb::AppRegistration {
        let scopes = self.scope_set();
        pb::AppRegistration {
            app_id: self.id.to_string(),
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            region: self.region.to_wire() as i32,
            client_id: self.client_id.clone(),
            redirect_uris: self.redirect_uris.clone(),
            declared_scopes: self
                .declared
                .0
                .iter()
                .map(|d| proto::common::v1::ScopeJustification {
                    scope: Some(d.scope.to_wire()),
                    justification: d.justification.clone(),
                })
                .collect(),
            scopes_version: self.scopes_version,
            status: match self.status {
                AppStatus::PendingApproval => pb::AppStatus::PendingApproval,
                AppStatus::Approved => pb::AppStatus::Approved,
                AppStatus::Revoked => pb::AppStatus::Revoked,
            } as i32,
            pkce_enabled: self.pkce_enabled,
            risk_tier: proto::common::v1::RiskTier::from(scopes.risk_tier()) as i32,
            full_account_access: scopes.is_full_account_access(),
            registered_by: self.registered_by.clone(),
            approved_by: self.approved_by.clone().unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
            approved_at: self.approved_at.map(timestamp),
        }
    }

    fn refs(&self) -> EventRefs {
        EventRefs {
            app_id: self.id.to_string(),
            region: self.region.to_wire() as i32,
            ..EventRefs::default()
        }
    }

    fn event(&self, kind: EventKind, caller: &Caller, at: DateTime<Utc>) -> EventBuilder {
        EventBuilder::new(
            kind,
            &self.tenant,
            service_actor(&caller.name),
            subject_of(subject::Kind::App, self.id),
            at,
        )
        .refs(self.refs())
        .scopes(&self.scope_set())
    }
}

/// Loads an app; `FOR UPDATE` when `lock` (inside a transaction).
pub async fn load(conn: &mut PgConnection, id: AppId, lock: bool) -> Result<App, AuthError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM app_registrations WHERE app_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<AppRow> = sqlx::query_as(&sql).bind(id.0).fetch_optional(conn).await?;
    row.ok_or_else(|| AuthError::NotFound(format!("app {id}")))?
        .try_into()
}

/// A validated `RegisterAppRequest`.
pub struct Registration {
    pub tenant: Tenant,
    pub name: String,
    pub region: Region,
    pub client_id: String,
    pub client_secret: SecretString,
    pub redirect_uris: Vec<String>,
    pub declared: DeclaredScopes,
    pub pkce_enabled: bool,
}

pub fn region_field(field: &str, value: i32) -> Result<Region, AuthError> {
    Region::from_wire(value).ok_or_else(|| {
        AuthError::invalid(
            field,
            "must be REGION_US, REGION_EU, REGION_CA or REGION_AU",
        )
    })
}

fn declared_field(
    field: &str,
    wire: &[proto::common::v1::ScopeJustification],
) -> Result<DeclaredScopes, AuthError> {
    if wire.is_empty() {
        return Err(AuthError::invalid(field, "declare at least one scope"));
    }
    let mut declared: Vec<DeclaredScope> = Vec::with_capacity(wire.len());
    for (i, item) in wire.iter().enumerate() {
        let here = format!("{field}[{i}]");
        let scope = item
            .scope
            .as_ref()
            .ok_or_else(|| AuthError::invalid(format!("{here}.scope"), "required"))?;
        let scope = Scope::from_wire(scope, &format!("{here}.scope"))
            .map_err(|e| AuthError::invalid(e.field, e.problem))?;
        if declared.iter().any(|d| d.scope.family == scope.family) {
            return Err(AuthError::invalid(
                format!("{here}.scope"),
                format!("{} is declared more than once", scope.family),
            ));
        }
        let justification =
            required_text(&format!("{here}.justification"), &item.justification, 2_000)?;
        declared.push(DeclaredScope {
            scope,
            justification,
        });
    }
    Ok(DeclaredScopes(declared))
}

fn redirect_uris_field(wire: &[String]) -> Result<Vec<String>, AuthError> {
    if wire.is_empty() {
        return Err(AuthError::invalid(
            "redirect_uris",
            "list at least one redirect URI",
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(i, raw)| {
            let field = format!("redirect_uris[{i}]");
            let url = url::Url::parse(raw)
                .map_err(|_| AuthError::invalid(&field, "not an absolute URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.fragment().is_some() {
                return Err(AuthError::invalid(
                    &field,
                    "must be an http(s) URL without a fragment",
                ));
            }
            Ok(raw.clone())
        })
        .collect()
}

impl TryFrom<pb::RegisterAppRequest> for Registration {
    type Error = AuthError;

    fn try_from(request: pb::RegisterAppRequest) -> Result<Self, AuthError> {
        if request.client_secret.trim().is_empty() {
            return Err(AuthError::invalid("client_secret", "must not be empty"));
        }
        Ok(Registration {
            tenant: Tenant::parse("tenant", &request.tenant)?,
            name: required_text("name", &request.name, 200)?,
            region: region_field("region", request.region)?,
            client_id: required_text("client_id", &request.client_id, 200)?,
            client_secret: SecretString::from(request.client_secret),
            redirect_uris: redirect_uris_field(&request.redirect_uris)?,
            declared: declared_field("declared_scopes", &request.declared_scopes)?,
            pkce_enabled: request.pkce_enabled,
        })
    }
}

#[tracing::instrument(skip_all, fields(tenant = %registration.tenant.0, region = %registration.region))]
pub async fn register(
    ctx: &Context,
    caller: &Caller,
    registration: Registration,
) -> Result<App, AuthError> {
    let id = AppId::new();
    let now = ctx.now();
    let sealed = ctx
        .vault
        .seal(&registration.client_secret, &secret_binding(id))?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO app_registrations (app_id, tenant, name, region, client_id, client_secret_ct, \
         client_secret_key_id, redirect_uris, declared_scopes, scopes_version, status, pkce_enabled, \
         registered_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, 'pending_approval', $10, $11, $12)",
    )
    .bind(id.0)
    .bind(&registration.tenant.0)
    .bind(&registration.name)
    .bind(registration.region.as_str())
    .bind(&registration.client_id)
    .bind(&sealed.ciphertext)
    .bind(&sealed.key_id)
    .bind(&registration.redirect_uris)
    .bind(Json(&registration.declared))
    .bind(registration.pkce_enabled)
    .bind(&caller.name)
    .bind(now)
    .execute(&mut *tx)
    .await;
    if let Err(sqlx::Error::Database(db)) = &inserted
        && db.is_unique_violation()
    {
        return Err(AuthError::AlreadyExists(format!(
            "client_id {:?} is already registered in region {}",
            registration.client_id, registration.region
        )));
    }
    inserted?;
    record_version(
        &mut tx,
        id,
        1,
        &registration.declared,
        &caller.name,
        "registered",
        now,
    )
    .await?;
    let app = load(&mut tx, id, false).await?;
    let event = app
        .event(EventKind::AppRegistered, caller, now)
        .payload(serde_json::json!({
            "name": app.name,
            "client_id": app.client_id,
            "redirect_uris": app.redirect_uris,
            "declared_scopes": app.declared,
            "scopes_version": 1,
            "pkce_enabled": app.pkce_enabled,
            "full_account_access": app.scope_set().is_full_account_access(),
        }))
        .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(app_id = %id, "app registered");
    Ok(app)
}

async fn record_version(
    conn: &mut PgConnection,
    id: AppId,
    version: u32,
    declared: &DeclaredScopes,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO app_scope_versions (app_id, scopes_version, declared_scopes, changed_by, reason, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.0)
    .bind(i32::try_from(version).unwrap_or(i32::MAX))
    .bind(Json(declared))
    .bind(by)
    .bind(reason)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(app_id = %id))]
pub async fn approve(
    ctx: &Context,
    caller: &Caller,
    id: AppId,
    scopes_version: u32,
    note: &str,
) -> Result<App, AuthError> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let app = load(&mut tx, id, true).await?;
    match app.status {
        AppStatus::PendingApproval => {}
        AppStatus::Approved => {
            return Err(AuthError::FailedPrecondition(format!(
                "app {id} is already approved"
            )));
        }
        AppStatus::Revoked => {
            return Err(AuthError::FailedPrecondition(format!(
                "app {id} is revoked"
            )));
        }
    }
    if scopes_version != app.scopes_version {
        return Err(AuthError::FailedPrecondition(format!(
            "scopes_version {scopes_version} is not the app's current version {}: review the current scopes",
            app.scopes_version
        )));
    }
    sqlx::query(
        "UPDATE app_registrations SET status = 'approved', approved_by = $2, approved_at = $3, approval_note = $4 \
         WHERE app_id = $1",
    )
    .bind(id.0)
    .bind(&caller.name)
    .bind(now)
    .bind(note)
    .execute(&mut *tx)
    .await?;
    let app = load(&mut tx, id, false).await?;
    let event = app
        .event(EventKind::AppApproved, caller, now)
        .reason(note)
        .payload(serde_json::json!({
            "scopes_version": app.scopes_version,
            "declared_scopes": app.declared,
        }))
        .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    Ok(app)
}

pub async fn get(ctx: &Context, id: AppId) -> Result<App, AuthError> {
    let mut conn = ctx.pool.acquire().await?;
    load(&mut conn, id, false).await
}

pub struct AppFilter {
    pub tenant: Option<String>,
    pub region: Option<Region>,
    pub status: Option<AppStatus>,
}

impl TryFrom<&pb::ListAppsRequest> for AppFilter {
    type Error = AuthError;

    fn try_from(request: &pb::ListAppsRequest) -> Result<Self, AuthError> {
        Ok(AppFilter {
            tenant: (!request.tenant.is_empty()).then(|| request.tenant.clone()),
            region: match request.region {
                0 => None,
                value => Some(region_field("region", value)?),
            },
            status: match pb::AppStatus::try_from(request.status) {
                Ok(pb::AppStatus::Unspecified) => None,
                Ok(pb::AppStatus::PendingApproval) => Some(AppStatus::PendingApproval),
                Ok(pb::AppStatus::Approved) => Some(AppStatus::Approved),
                Ok(pb::AppStatus::Revoked) => Some(AppStatus::Revoked),
                Err(_) => return Err(AuthError::invalid("status", "not a known app status")),
            },
        })
    }
}

pub async fn list(
    ctx: &Context,
    filter: AppFilter,
    page: Page,
) -> Result<(Vec<App>, proto::common::v1::PageResponse), AuthError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM app_registrations \
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR region = $2) \
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR app_id > $4) \
         ORDER BY app_id LIMIT $5"
    );
    let rows: Vec<AppRow> = sqlx::query_as(&sql)
        .bind(filter.tenant)
        .bind(filter.region.map(Region::as_str))
        .bind(filter.status.map(AppStatus::as_str))
        .bind(page.after)
        .bind(page.fetch_limit())
        .fetch_all(&ctx.pool)
        .await?;
    let apps = rows
        .into_iter()
        .map(App::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(apps, |app| app.id.0))
}

/// A validated `UpdateAppScopesRequest`.
pub struct ScopeChange {
    pub app: AppId,
    pub declared: DeclaredScopes,
    pub reason: String,
}

impl TryFrom<pb::UpdateAppScopesRequest> for ScopeChange {
    type Error = AuthError;

    fn try_from(request: pb::UpdateAppScopesRequest) -> Result<Self, AuthError> {
        Ok(ScopeChange {
            app: AppId::parse("app_id", &request.app_id)?,
            declared: declared_field("declared_scopes", &request.declared_scopes)?,
            reason: required_text("reason", &request.reason, 2_000)?,
        })
    }
}

/// Replaces the declared scopes: a new version that needs approval again. Live
/// connections whose grant now differs from the declared set get a CONNECTION_DRIFTED
/// event each.
#[tracing::instrument(skip_all, fields(app_id = %change.app))]
pub async fn update_scopes(
    ctx: &Context,
    caller: &Caller,
    change: ScopeChange,
) -> Result<App, AuthError> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let before = load(&mut tx, change.app, true).await?;
    if before.status == AppStatus::Revoked {
        return Err(AuthError::FailedPrecondition(format!(
            "app {} is revoked",
            change.app
        )));
    }
    if before.declared == change.declared {
        return Ok(before);
    }
    let version = before.scopes_version + 1;
    sqlx::query(
        "UPDATE app_registrations SET declared_scopes = $2, scopes_version = $3, status = 'pending_approval', \
         approved_by = NULL, approved_at = NULL, approval_note = NULL WHERE app_id = $1",
    )
    .bind(change.app.0)
    .bind(Json(&change.declared))
    .bind(i32::try_from(version).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    record_version(
        &mut tx,
        change.app,
        version,
        &change.declared,
        &caller.name,
        &change.reason,
        now,
    )
    .await?;
    let app = load(&mut tx, change.app, false).await?;
    let declared = app.scope_set();
    let mut events = vec![
        app.event(EventKind::AppScopesChanged, caller, now)
            .reason(&change.reason)
            .payload(serde_json::json!({
                "from_version": before.scopes_version,
                "to_version": version,
                "previous_scopes": before.declared,
                "declared_scopes": app.declared,
            }))
            .build(),
    ];
    let live: Vec<(Uuid, String, String, String, Json<ScopeSet>, i32)> = sqlx::query_as(
        "SELECT connection_id, principal, clio_user_id, clio_account_id, granted_scopes, granted_scopes_version \
         FROM connections WHERE app_id = $1 AND status <> 'revoked' ORDER BY connection_id",
    )
    .bind(change.app.0)
    .fetch_all(&mut *tx)
    .await?;
    for (connection_id, principal, clio_user_id, clio_account_id, granted, granted_version) in live
    {
        let granted = granted.0;
        if granted == declared {
            continue;
        }
        let missing: Vec<String> = declared
            .iter()
            .filter(|s| !granted.covers(s))
            .map(ToString::to_string)
            .collect();
        let extra: Vec<String> = granted
            .iter()
            .filter(|s| !declared.covers(s))
            .map(ToString::to_string)
            .collect();
        events.push(
            EventBuilder::new(
                EventKind::ConnectionDrifted,
                &app.tenant,
                service_actor(&caller.name),
                subject_of(subject::Kind::Connection, connection_id),
                now,
            )
            .refs(EventRefs {
                connection_id: connection_id.to_string(),
                principal,
                clio_user_id,
                clio_account_id,
                ..app.refs()
            })
            .scopes(&granted)
            .reason(&change.reason)
            .payload(serde_json::json!({
                "granted_scopes_version": granted_version,
                "app_scopes_version": version,
                "declared_scopes": declared,
                "not_granted": missing,
                "no_longer_declared": extra,
            }))
            .build(),
        );
    }
    for event in events {
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    Ok(app)
}
