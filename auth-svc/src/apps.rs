//! App registrations: a Clio developer app per region with its declared, justified scopes,
//! approved by compliance before anyone may connect through it. Changing the declared
//! scopes bumps the version, needs a new approval and marks older grants as drifted.

use chrono::{DateTime, Utc};
use clio_api::{AppCredentials, Region};
use proto::auth::v1 as pb;
use proto::common::v1::AuditEvent;
use proto::common::v1::{EventKind, EventRefs, subject};
use scope_catalog::{Scope, ScopeSet};
use secrecy::SecretString;
use service_runtime::Caller;

use proto::time::timestamp;

use crate::audit_events::{EventBuilder, service_actor, subject_of};
use crate::context::Context;
use crate::domain::{AppId, AppStatus, DeclaredScope, DeclaredScopes, Tenant, required_text};
use crate::error::AuthError;
use crate::paging::Page;
use crate::store;
use crate::store::apps::{Decision, NewApp, ScopeVersion, secret_binding};
use crate::store::connections::LiveGrant;
use crate::token_vault::TokenVault;
use crate::wire_region;

/// A registration as stored.
#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    pub tenant: String,
    pub name: String,
    pub region: Region,
    pub client_id: String,
    /// Sealed; opened only by [`App::credentials`].
    pub(crate) client_secret_ct: Vec<u8>,
    pub redirect_uris: Vec<String>,
    pub declared: DeclaredScopes,
    pub scopes_version: u32,
    pub status: AppStatus,
    pub pkce_enabled: bool,
    pub registered_by: String,
    pub created_at: DateTime<Utc>,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    /// Compliance's refusal, while the app is rejected.
    pub rejection: Option<Rejection>,
}

/// Who refused an app, when and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub by: String,
    pub at: DateTime<Utc>,
    pub note: String,
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
            region: wire_region::to_wire(self.region) as i32,
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
                AppStatus::Rejected => pb::AppStatus::Rejected,
            } as i32,
            pkce_enabled: self.pkce_enabled,
            risk_tier: proto::common::v1::RiskTier::from(scopes.risk_tier()) as i32,
            full_account_access: scopes.is_full_account_access(),
            registered_by: self.registered_by.clone(),
            approved_by: self.approved_by.clone().unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
            approved_at: self.approved_at.map(timestamp),
            rejected_by: self
                .rejection
                .as_ref()
                .map(|r| r.by.clone())
                .unwrap_or_default(),
            rejected_at: self.rejection.as_ref().map(|r| timestamp(r.at)),
            rejection_note: self
                .rejection
                .as_ref()
                .map(|r| r.note.clone())
                .unwrap_or_default(),
        }
    }

    fn refs(&self) -> EventRefs {
        EventRefs {
            app_id: self.id.to_string(),
            region: wire_region::to_wire(self.region) as i32,
            ..EventRefs::default()
        }
    }

    pub(crate) fn event(
        &self,
        kind: EventKind,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> EventBuilder {
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
    wire_region::from_wire(value).ok_or_else(|| {
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
    let new = NewApp {
        id,
        tenant: &registration.tenant.0,
        name: &registration.name,
        region: registration.region,
        client_id: &registration.client_id,
        client_secret: &sealed,
        redirect_uris: &registration.redirect_uris,
        declared: &registration.declared,
        pkce_enabled: registration.pkce_enabled,
        registered_by: &caller.name,
        created_at: now,
    };
    if store::apps::insert(&mut *tx, &new).await? == store::Inserted::Duplicate {
        return Err(AuthError::AlreadyExists(format!(
            "client_id {:?} is already registered in region {}",
            registration.client_id, registration.region
        )));
    }
    let version = ScopeVersion {
        app: id,
        version: 1,
        declared: &registration.declared,
        changed_by: &caller.name,
        reason: "registered",
        changed_at: now,
    };
    store::apps::insert_scope_version(&mut *tx, &version).await?;
    let app = store::apps::load(&mut *tx, id).await?;
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

/// Compliance's decision on a pending registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// People may connect through it.
    Approve,
    /// Nobody may, until its scopes are revised and it is decided on again.
    Reject,
}

impl Verdict {
    fn event(self) -> EventKind {
        match self {
            Verdict::Approve => EventKind::AppApproved,
            Verdict::Reject => EventKind::AppRejected,
        }
    }
}

/// Records compliance's `verdict` on a pending app, at the scopes version the officer read,
/// with its audit event, in one transaction.
#[tracing::instrument(skip_all, fields(app_id = %id, ?verdict))]
pub async fn decide(
    ctx: &Context,
    caller: &Caller,
    id: AppId,
    verdict: Verdict,
    scopes_version: u32,
    note: &str,
) -> Result<App, AuthError> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let app = store::apps::load_for_update(&mut *tx, id).await?;
    let refused = |why: String| Err(AuthError::FailedPrecondition(why));
    match app.status {
        AppStatus::PendingApproval => {}
        AppStatus::Approved => return refused(format!("app {id} is already approved")),
        AppStatus::Revoked => return refused(format!("app {id} is revoked")),
        AppStatus::Rejected => {
            return refused(format!(
                "app {id} was rejected: its scopes must be revised (UpdateAppScopes) before a new decision"
            ));
        }
    }
    if scopes_version != app.scopes_version {
        return refused(format!(
            "scopes_version {scopes_version} is not app {id}'s current version {}: review the current scopes",
            app.scopes_version
        ));
    }
    let decision = Decision {
        by: &caller.name,
        at: now,
        note,
    };
    store::apps::mark_decided(&mut *tx, id, verdict, &decision).await?;
    let app = store::apps::load(&mut *tx, id).await?;
    let event = app
        .event(verdict.event(), caller, now)
        .reason(note)
        .payload(serde_json::json!({
            "scopes_version": app.scopes_version,
            "declared_scopes": app.declared,
        }))
        .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(app_id = %id, ?verdict, "app decided");
    Ok(app)
}

pub async fn get(ctx: &Context, id: AppId) -> Result<App, AuthError> {
    store::apps::load(&ctx.pool, id).await
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
                Ok(pb::AppStatus::Rejected) => Some(AppStatus::Rejected),
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
    let apps = store::apps::list(&ctx.pool, &filter, &page).await?;
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
    let before = store::apps::load_for_update(&mut *tx, change.app).await?;
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
    store::apps::replace_declared_scopes(&mut *tx, change.app, &change.declared, version).await?;
    let entry = ScopeVersion {
        app: change.app,
        version,
        declared: &change.declared,
        changed_by: &caller.name,
        reason: &change.reason,
        changed_at: now,
    };
    store::apps::insert_scope_version(&mut *tx, &entry).await?;
    let app = store::apps::load(&mut *tx, change.app).await?;
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
    let live = store::connections::live_grants_of_app(&mut *tx, change.app).await?;
    let drift = Drift {
        app: &app,
        caller,
        reason: &change.reason,
        at: now,
    };
    events.extend(live.into_iter().filter_map(|grant| drift.event(grant)));
    for event in events {
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    Ok(app)
}

/// A change of an app's declared scopes, as the connections made through it see it.
struct Drift<'a> {
    /// The app as changed.
    app: &'a App,
    caller: &'a Caller,
    reason: &'a str,
    at: DateTime<Utc>,
}

impl Drift<'_> {
    /// The CONNECTION_DRIFTED event of a live connection whose grant now differs from the
    /// declared set; `None` when it does not.
    fn event(&self, live: LiveGrant) -> Option<AuditEvent> {
        let declared = self.app.scope_set();
        let granted = live.granted.0;
        if granted == declared {
            return None;
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
        let event = EventBuilder::new(
            EventKind::ConnectionDrifted,
            &self.app.tenant,
            service_actor(&self.caller.name),
            subject_of(subject::Kind::Connection, live.connection_id),
            self.at,
        )
        .refs(EventRefs {
            connection_id: live.connection_id.to_string(),
            principal: live.principal,
            clio_user_id: live.clio_user_id,
            clio_account_id: live.clio_account_id,
            ..self.app.refs()
        })
        .scopes(&granted)
        .reason(self.reason)
        .payload(serde_json::json!({
            "granted_scopes_version": live.granted_version,
            "app_scopes_version": self.app.scopes_version,
            "declared_scopes": declared,
            "not_granted": missing,
            "no_longer_declared": extra,
        }))
        .build();
        Some(event)
    }
}
