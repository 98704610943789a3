//! Connecting a person: starting an authorization (state, PKCE, authorize URL) and
//! completing it (code exchange, who_am_i, storing the connection and the consent).
//!
//! The `state` is 32 random bytes; only its SHA-256 is stored. It is single use (consumed
//! by one conditional UPDATE), expires by the injected clock, and carries the principal,
//! app, mode and redirect URI it was started with, so completion never trusts the caller
//! for them. The redirect URI is stored and sent again byte for byte at the exchange.
//!
//! A state is also bound to how it may be completed: CompleteAuthorization only by the
//! service credential that started it, and the unauthenticated web callback only for
//! web-mode states (otherwise a caller could complete another's out-of-band flow through
//! the callback). A refused completer does not use the state up: it is refused before any
//! side effect, so the caller that started the flow can still finish it, and the state
//! stays single use for that caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use clio_api::{AuthorizeRequest, ClioError, Pkce, TokenGrant, WhoAmI};
use proto::auth::v1 as pb;
use proto::common::v1::{EventKind, EventRefs, subject};
use rand::RngCore;
use scope_catalog::ScopeSet;
use secrecy::{ExposeSecret, SecretString};
use service_runtime::Caller;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::apps::{self, App};
use crate::audit_events::{EventBuilder, person_actor, service_actor, subject_of};
use crate::browser_binding;
use crate::connections::{self, Connection, access_binding, refresh_binding};
use crate::context::Context;
use crate::domain::{AppId, AppStatus, ConnectionId, ConnectionStatus, Mode, Principal};
use crate::error::AuthError;
use crate::token_vault::{Binding, Sealed};
use crate::wire_region;

/// Assumed lifetime when Clio omits `expires_in` (it documents 30 days; 1 h is safe).
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 3_600;

pub fn pkce_binding(id: Uuid) -> Binding {
    Binding::new("authorization_states", "pkce_verifier", id)
}

/// A validated `StartAuthorizationRequest`.
pub struct StartRequest {
    pub app: AppId,
    pub principal: Principal,
    pub mode: Mode,
    pub reconnect: Option<ConnectionId>,
}

impl TryFrom<pb::StartAuthorizationRequest> for StartRequest {
    type Error = AuthError;

    fn try_from(request: pb::StartAuthorizationRequest) -> Result<Self, AuthError> {
        Ok(StartRequest {
            app: AppId::parse("app_id", &request.app_id)?,
            principal: Principal::parse("principal", &request.principal)?,
            mode: match pb::AuthorizationMode::try_from(request.mode) {
                Ok(pb::AuthorizationMode::Web) => Mode::Web,
                Ok(pb::AuthorizationMode::OutOfBand) => Mode::OutOfBand,
                _ => {
                    return Err(AuthError::invalid(
                        "mode",
                        "must be AUTHORIZATION_MODE_WEB or AUTHORIZATION_MODE_OUT_OF_BAND",
                    ));
                }
            },
            reconnect: match request.reconnect_connection_id.as_str() {
                "" => None,
                raw => Some(ConnectionId::parse("reconnect_connection_id", raw)?),
            },
        })
    }
}

pub struct Started {
    pub authorization_url: String,
    pub state: SecretString,
    pub expires_at: DateTime<Utc>,
    pub mode: Mode,
}

pub(crate) fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

/// The redirect URI of a mode: auth-svc's callback, or Clio's approval page.
fn redirect_uri(ctx: &Context, app: &App, mode: Mode) -> String {
    match mode {
        Mode::Web => format!(
            "{}/oauth/callback",
            ctx.config.public_base_url.trim_end_matches('/')
        ),
        Mode::OutOfBand => ctx.clio.regions().approval_redirect_uri(app.region),
    }
}

#[tracing::instrument(skip_all, fields(app_id = %request.app, mode = %request.mode, caller = %caller.name))]
pub async fn start(
    ctx: &Context,
    caller: &Caller,
    request: StartRequest,
) -> Result<Started, AuthError> {
    let app = apps::get(ctx, request.app).await?;
    require_approved(&app)?;
    if let Some(reconnect) = request.reconnect {
        let existing = connections::get(ctx, reconnect).await?;
        if existing.app_id != app.id || existing.principal != request.principal.0 {
            return Err(AuthError::FailedPrecondition(format!(
                "connection {reconnect} belongs to another app or person"
            )));
        }
        if existing.status == ConnectionStatus::Revoked {
            return Err(AuthError::FailedPrecondition(format!(
                "connection {reconnect} is revoked; connect anew instead"
            )));
        }
    }
    let redirect = redirect_uri(ctx, &app, request.mode);
    if !app.redirect_uris.contains(&redirect) {
        return Err(AuthError::FailedPrecondition(format!(
            "app {} does not list the redirect URI {redirect} that {} mode needs",
            app.id, request.mode
        )));
    }
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let state = URL_SAFE_NO_PAD.encode(random);
    let id = Uuid::now_v7();
    let now = ctx.now();
    let ttl = i64::try_from(ctx.config.authorization.state_ttl_secs).unwrap_or(600);
    let expires_at = now + Duration::seconds(ttl);
    forget_expired_verifiers(ctx, now).await?;
    let pkce = app.pkce_enabled.then(Pkce::generate);
    let sealed = pkce
        .as_ref()
        .map(|p| ctx.vault.seal(p.verifier(), &pkce_binding(id)))
        .transpose()?;
    sqlx::query(
        "INSERT INTO authorization_states (id, state_hash, app_id, principal, mode, redirect_uri, scopes_version, \
         reconnect_connection_id, pkce_verifier_ct, pkce_verifier_key_id, created_at, expires_at, started_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id)
    .bind(state_hash(&state))
    .bind(app.id.0)
    .bind(&request.principal.0)
    .bind(request.mode.as_str())
    .bind(&redirect)
    .bind(i32::try_from(app.scopes_version).unwrap_or(i32::MAX))
    .bind(request.reconnect.map(|c| c.0))
    .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
    .bind(sealed.as_ref().map(|s| s.key_id.clone()))
    .bind(now)
    .bind(expires_at)
    .bind(&caller.name)
    .execute(&ctx.pool)
    .await?;
    let url = ctx
        .clio
        .authorize_url(&AuthorizeRequest {
            region: app.region,
            client_id: &app.client_id,
            redirect_uri: &redirect,
            state: &state,
            pkce: pkce.as_ref(),
        })
        .map_err(|e| AuthError::Internal(format!("authorize URL: {e}")))?;
    // The web flow sends the person through auth-svc's start page first, which binds the
    // flow to their browser (see `browser_binding`); it keeps Clio's URL, less the state.
    let url = match request.mode {
        Mode::OutOfBand => url,
        Mode::Web => {
            sqlx::query("UPDATE authorization_states SET clio_authorize_url = $2 WHERE id = $1")
                .bind(id)
                .bind(without_state(&url)?)
                .execute(&ctx.pool)
                .await?;
            browser_binding::start_link(ctx, &state)
        }
    };
    Ok(Started {
        authorization_url: url,
        state: SecretString::from(state),
        expires_at,
        mode: request.mode,
    })
}

/// Clio's authorize URL with its `state` parameter taken out (states are never stored).
fn without_state(url: &str) -> Result<String, AuthError> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| AuthError::Internal(format!("authorize URL: {e}")))?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, _)| name != "state")
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(kept);
    Ok(parsed.into())
}

/// PKCE verifiers of authorizations nobody completed are useless once expired: they are
/// dropped (the row stays, for the record of what was started).
async fn forget_expired_verifiers(ctx: &Context, now: DateTime<Utc>) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE authorization_states SET pkce_verifier_ct = NULL, pkce_verifier_key_id = NULL \
         WHERE expires_at <= $1 AND pkce_verifier_ct IS NOT NULL",
    )
    .bind(now)
    .execute(&ctx.pool)
    .await?;
    Ok(())
}

fn require_approved(app: &App) -> Result<(), AuthError> {
    match app.status {
        AppStatus::Approved => Ok(()),
        AppStatus::PendingApproval => Err(AuthError::FailedPrecondition(format!(
            "app {} is waiting for compliance approval",
            app.id
        ))),
        AppStatus::Revoked => Err(AuthError::FailedPrecondition(format!(
            "app {} is revoked",
            app.id
        ))),
    }
}

/// What the person brought back from Clio.
pub enum Answer {
    Code(SecretString),
    /// Clio's `error` (e.g. `access_denied`).
    Denied(String),
}

/// Reads a pasted code: the bare code, or the approval page's `Success code=...` title
/// (a `Failure error=...` title is a denial).
pub fn parse_pasted(raw: &str) -> Result<Answer, AuthError> {
    let text = raw.trim();
    if let Some(error) = text.strip_prefix("Failure error=") {
        return Ok(Answer::Denied(
            error.split_whitespace().next().unwrap_or("").to_owned(),
        ));
    }
    let code = text.strip_prefix("Success code=").unwrap_or(text);
    let code = code.split(['&', ' ']).next().unwrap_or("").trim();
    if code.is_empty() {
        return Err(AuthError::invalid("code", "must not be empty"));
    }
    if code.chars().any(|c| c.is_control() || c.is_whitespace()) || code.len() > 2_048 {
        return Err(AuthError::invalid("code", "is not a code Clio issues"));
    }
    Ok(Answer::Code(SecretString::from(code.to_owned())))
}

/// A consumed authorization state.
#[derive(sqlx::FromRow)]
struct ConsumedState {
    id: Uuid,
    app_id: Uuid,
    principal: String,
    mode: String,
    redirect_uri: String,
    scopes_version: i32,
    reconnect_connection_id: Option<Uuid>,
    pkce_verifier_ct: Option<Vec<u8>>,
}

/// Who is completing an authorization.
#[derive(Debug, Clone, Copy)]
pub enum Completer<'a> {
    /// The web callback: Clio redirected the person's browser, no service credential;
    /// with the flow's browser cookie if the browser sent one.
    Browser(Option<&'a str>),
    /// CompleteAuthorization, by the service credential of this name.
    Caller(&'a str),
}

/// Marks the state used, or says why it cannot be. Only a completer the state is bound
/// to uses it (see the module doc).
async fn consume_state(
    ctx: &Context,
    state: &str,
    completer: Completer<'_>,
) -> Result<ConsumedState, AuthError> {
    if state.trim().is_empty() {
        return Err(AuthError::invalid("state", "must not be empty"));
    }
    let hash = state_hash(state.trim());
    let now = ctx.now();
    let (caller, mode, binding) = match completer {
        // No cookie binds to nothing: an empty hash matches no state.
        Completer::Browser(cookie) => (
            None,
            Some(Mode::Web.as_str()),
            Some(
                cookie
                    .map(browser_binding::binding_hash)
                    .unwrap_or_default(),
            ),
        ),
        Completer::Caller(name) => (Some(name), None, None),
    };
    // The PKCE verifier leaves the table as the state is used: it is needed once.
    let consumed: Option<ConsumedState> = sqlx::query_as(
        "UPDATE authorization_states s SET used_at = $2, pkce_verifier_ct = NULL, pkce_verifier_key_id = NULL \
         FROM (SELECT id, pkce_verifier_ct FROM authorization_states WHERE state_hash = $1 FOR UPDATE) old \
         WHERE s.id = old.id AND s.used_at IS NULL AND s.expires_at > $2 \
         AND ($3::text IS NULL OR s.started_by = $3) AND ($4::text IS NULL OR s.mode = $4) \
         AND ($5::bytea IS NULL OR s.browser_binding_hash = $5) \
         RETURNING s.id, s.app_id, s.principal, s.mode, s.redirect_uri, s.scopes_version, \
         s.reconnect_connection_id, old.pkce_verifier_ct",
    )
    .bind(&hash)
    .bind(now)
    .bind(caller)
    .bind(mode)
    .bind(binding)
    .fetch_optional(&ctx.pool)
    .await?;
    match consumed {
        Some(consumed) => Ok(consumed),
        None => Err(why_not_consumed(ctx, &hash, completer, now).await?),
    }
}

/// A state that was not consumed, as it is now.
#[derive(sqlx::FromRow)]
struct UnusableState {
    app_id: Uuid,
    tenant: String,
    principal: String,
    mode: String,
    started_by: Option<String>,
    used_at: Option<DateTime<Utc>>,
    browser_binding_hash: Option<Vec<u8>>,
    expires_at: DateTime<Utc>,
}

/// Why `consume_state` found nothing to consume. The completer's binding is judged first,
/// so a caller the state is not bound to learns nothing of its use or expiry.
async fn why_not_consumed(
    ctx: &Context,
    hash: &[u8],
    completer: Completer<'_>,
    now: DateTime<Utc>,
) -> Result<AuthError, AuthError> {
    let seen: Option<UnusableState> = sqlx::query_as(
        "SELECT s.app_id, a.tenant, s.principal, s.mode, s.started_by, s.used_at, \
         s.browser_binding_hash, s.expires_at \
         FROM authorization_states s JOIN app_registrations a ON a.app_id = s.app_id \
         WHERE s.state_hash = $1",
    )
    .bind(hash)
    .fetch_optional(&ctx.pool)
    .await?;
    let Some(seen) = seen else {
        return Ok(AuthError::invalid("state", "unknown"));
    };
    match completer {
        Completer::Browser(_) if seen.mode != Mode::Web.as_str() => {
            return Ok(AuthError::FailedPrecondition(
                "this authorization was started out of band; paste the code where it was started"
                    .into(),
            ));
        }
        Completer::Browser(cookie)
            if seen.used_at.is_none()
                && seen.expires_at > now
                && seen.browser_binding_hash.as_deref()
                    != cookie.map(browser_binding::binding_hash).as_deref() =>
        {
            return refuse_other_browser(ctx, &seen, now).await;
        }
        Completer::Caller(name) if seen.started_by.as_deref() != Some(name) => {
            return refuse_other_caller(ctx, &seen, name, now).await;
        }
        _ => {}
    }
    Ok(if seen.used_at.is_some() {
        AuthError::FailedPrecondition("state already used".into())
    } else {
        AuthError::FailedPrecondition("state expired".into())
    })
}

/// A caller presenting a state it did not start holds a state that leaked (or was handed
/// on): refused with PERMISSION_DENIED, and recorded as ACCESS_DENIED in the app's tenant.
/// States started before callers were recorded (`started_by` NULL) are refused alike: the
/// caller cannot be shown to be the one that started them.
async fn refuse_other_caller(
    ctx: &Context,
    seen: &UnusableState,
    caller: &str,
    now: DateTime<Utc>,
) -> Result<AuthError, AuthError> {
    let reason = match seen.started_by {
        Some(_) => format!(
            "caller {caller} did not start this authorization; only the caller that called \
             StartAuthorization may complete it"
        ),
        None => format!(
            "this authorization was started before auth-svc recorded who starts authorizations, \
             so caller {caller} cannot be shown to own it; start again"
        ),
    };
    let payload = serde_json::json!({
        "refused": "authorization_started_by_another_caller",
        "method": "CompleteAuthorization",
        "mode": seen.mode,
    });
    record_refusal(ctx, seen, service_actor(caller), &reason, payload, now).await?;
    tracing::warn!(app_id = %seen.app_id, caller, "refused a completion by a caller that did not start it");
    Ok(AuthError::PermissionDenied(reason))
}

/// A web callback from a browser that did not open this authorization's start link (or
/// a link nobody opened): refused and recorded as ACCESS_DENIED in the app's tenant. The
/// state stays usable, so the person's own browser can still complete it.
async fn refuse_other_browser(
    ctx: &Context,
    seen: &UnusableState,
    now: DateTime<Utc>,
) -> Result<AuthError, AuthError> {
    let reason = "this browser did not open the authorization's start link; finish the \
                  connection in the browser where it was started"
        .to_owned();
    let payload = serde_json::json!({
        "refused": "callback_from_another_browser",
        "method": "web callback",
        "mode": seen.mode,
        "start_link_opened": seen.browser_binding_hash.is_some(),
    });
    record_refusal(
        ctx,
        seen,
        person_actor(&seen.principal),
        &reason,
        payload,
        now,
    )
    .await?;
    tracing::warn!(app_id = %seen.app_id, "refused a web callback from a browser the flow is not bound to");
    Ok(AuthError::PermissionDenied(reason))
}

/// Records a refused completion of the authorization `seen` as ACCESS_DENIED in the app's
/// tenant, about the person it was started for.
async fn record_refusal(
    ctx: &Context,
    seen: &UnusableState,
    actor: proto::common::v1::Actor,
    reason: &str,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let event = EventBuilder::new(
        EventKind::AccessDenied,
        &seen.tenant,
        actor,
        subject_of(subject::Kind::Person, &seen.principal),
        now,
    )
    .refs(EventRefs {
        app_id: seen.app_id.to_string(),
        principal: seen.principal.clone(),
        ..EventRefs::default()
    })
    .reason(reason)
    .payload(payload)
    .build();
    let mut tx = ctx.pool.begin().await?;
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    Ok(())
}

async fn set_outcome(ctx: &Context, id: Uuid, outcome: &str) -> Result<(), AuthError> {
    sqlx::query("UPDATE authorization_states SET outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(&ctx.pool)
        .await?;
    Ok(())
}

/// Completes an authorization with what Clio sent back (the web callback or a paste).
#[tracing::instrument(skip_all)]
pub async fn complete(
    ctx: &Context,
    state: &str,
    completer: Completer<'_>,
    answer: Answer,
) -> Result<Connection, AuthError> {
    let consumed = consume_state(ctx, state, completer).await?;
    let code = match answer {
        Answer::Code(code) => code,
        Answer::Denied(error) => {
            set_outcome(ctx, consumed.id, "denied").await?;
            tracing::info!(app_id = %consumed.app_id, error = %error, "the person declined at Clio");
            return Err(AuthError::FailedPrecondition(format!(
                "access was denied at Clio ({error}); no connection was made"
            )));
        }
    };
    match finish(ctx, &consumed, code).await {
        Ok(connection) => Ok(connection),
        Err(error) => {
            if let Err(outcome_error) = set_outcome(ctx, consumed.id, "failed").await {
                tracing::warn!(error = %outcome_error, "cannot record the failed authorization");
            }
            Err(error)
        }
    }
}

async fn finish(
    ctx: &Context,
    consumed: &ConsumedState,
    code: SecretString,
) -> Result<Connection, AuthError> {
    let app = apps::get(ctx, AppId(consumed.app_id)).await?;
    require_approved(&app)?;
    if i64::from(app.scopes_version) != i64::from(consumed.scopes_version) {
        return Err(AuthError::FailedPrecondition(
            "the app's declared scopes changed after this authorization started; start again"
                .into(),
        ));
    }
    let credentials = app.credentials(&ctx.vault)?;
    let verifier = consumed
        .pkce_verifier_ct
        .as_deref()
        .map(|ct| ctx.vault.open(ct, &pkce_binding(consumed.id)))
        .transpose()?;
    let grant = ctx
        .clio
        .exchange_code(
            app.region,
            &credentials,
            &code,
            &consumed.redirect_uri,
            verifier.as_ref(),
        )
        .await
        .map_err(|e| exchange_error(&app, e))?;
    let identity = match ctx.clio.who_am_i(app.region, &grant.access_token).await {
        Ok(identity) => identity,
        Err(error) => {
            discard_grant(ctx, &app, &grant);
            return Err(clio_failure("who_am_i", error));
        }
    };
    match store(ctx, consumed, &app, &identity, &grant).await {
        Ok(connection) => Ok(connection),
        Err(error) => {
            discard_grant(ctx, &app, &grant);
            Err(error)
        }
    }
}

/// Tokens we will not keep are revoked at Clio in the background, best effort.
fn discard_grant(ctx: &Context, app: &App, grant: &TokenGrant) {
    let clio = ctx.clio.clone();
    let region = app.region;
    let token = SecretString::from(grant.access_token.expose_secret().to_owned());
    tokio::spawn(async move {
        if let Err(error) = clio.deauthorize(region, &token).await {
            tracing::warn!(%error, "cannot deauthorize a discarded grant");
        }
    });
}

fn exchange_error(app: &App, error: ClioError) -> AuthError {
    match error {
        ClioError::InvalidGrant { description } => AuthError::FailedPrecondition(format!(
            "Clio refused the authorization code (invalid_grant: {description}); it may be used, expired, \
             or issued for another redirect URI or region"
        )),
        ClioError::InvalidClient { .. } => AuthError::FailedPrecondition(format!(
            "Clio refused the client credentials of app {} in region {}",
            app.id, app.region
        )),
        other => clio_failure("code exchange", other),
    }
}

/// Maps a Clio failure outside the code exchange.
pub fn clio_failure(what: &str, error: ClioError) -> AuthError {
    if error.is_retryable() {
        AuthError::ClioUnavailable(format!("{what}: {error}"))
    } else {
        AuthError::FailedPrecondition(format!("{what}: {error}"))
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// What a completed authorization writes into its connection row, whether the row is new
/// or a reconnected one: the insert and the update bind it alike.
struct GrantedColumns<'a> {
    identity: &'a WhoAmI,
    scopes: &'a ScopeSet,
    version: i32,
    access: &'a Sealed,
    refresh: &'a Sealed,
    expires_at: DateTime<Utc>,
    lifetime: i64,
    now: DateTime<Utc>,
}

impl<'a> GrantedColumns<'a> {
    /// Binds, after the parameters `query` already has: clio_user_name, clio_user_email,
    /// clio_account_id, clio_account_name, granted_scopes, granted_scopes_version,
    /// access_token_ct, access_token_key_id, refresh_token_ct, refresh_token_key_id,
    /// access_expires_at, token_lifetime_secs, and the time of the grant.
    fn bind(&self, query: PgQuery<'a>) -> PgQuery<'a> {
        query
            .bind(&self.identity.name)
            .bind(&self.identity.email)
            .bind(&self.identity.account_id)
            .bind(&self.identity.account_name)
            .bind(Json(self.scopes))
            .bind(self.version)
            .bind(&self.access.ciphertext)
            .bind(&self.access.key_id)
            .bind(&self.refresh.ciphertext)
            .bind(&self.refresh.key_id)
            .bind(self.expires_at)
            .bind(self.lifetime)
            .bind(self.now)
    }
}

/// Stores the connection (new, or replacing the live one of this person, app and Clio
/// user) and records the consent, in one transaction.
async fn store(
    ctx: &Context,
    consumed: &ConsumedState,
    app: &App,
    identity: &WhoAmI,
    grant: &TokenGrant,
) -> Result<Connection, AuthError> {
    let refresh_token = grant.refresh_token.as_ref().ok_or_else(|| {
        AuthError::FailedPrecondition("Clio issued no refresh token for this code".into())
    })?;
    let now = ctx.now();
    let lifetime = grant
        .expires_in
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
    let expires_at = now + Duration::seconds(lifetime);
    let scopes = app.scope_set();
    let mut tx = ctx.pool.begin().await?;

    let existing_id: Option<Uuid> = match consumed.reconnect_connection_id {
        Some(id) => Some(id),
        None => {
            sqlx::query_scalar(
                "SELECT connection_id FROM connections \
             WHERE app_id = $1 AND principal = $2 AND clio_user_id = $3 AND status <> 'revoked'",
            )
            .bind(app.id.0)
            .bind(&consumed.principal)
            .bind(&identity.user_id)
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    let previous = match existing_id {
        Some(id) => Some(connections::load(&mut tx, ConnectionId(id), true).await?),
        None => None,
    };
    if let Some(previous) = &previous {
        if previous.status == ConnectionStatus::Revoked {
            return Err(AuthError::FailedPrecondition(format!(
                "connection {} was revoked while this authorization was open",
                previous.id
            )));
        }
        if previous.clio_user_id != identity.user_id {
            return Err(AuthError::FailedPrecondition(format!(
                "connection {} belongs to another Clio user; the person signed in to Clio as someone else",
                previous.id
            )));
        }
    }
    if held_by_another_person(&mut tx, app, &consumed.principal, identity).await? {
        return refuse_shared_login(ctx, tx, consumed, app, identity, now).await;
    }
    let id = previous.as_ref().map_or_else(ConnectionId::new, |p| p.id);
    let access = ctx.vault.seal(&grant.access_token, &access_binding(id))?;
    let refresh = ctx.vault.seal(refresh_token, &refresh_binding(id))?;
    let columns = GrantedColumns {
        identity,
        scopes: &scopes,
        version: i32::try_from(app.scopes_version).unwrap_or(i32::MAX),
        access: &access,
        refresh: &refresh,
        expires_at,
        lifetime,
        now,
    };
    if previous.is_some() {
        let update = sqlx::query(
            "UPDATE connections SET status = 'active', clio_user_name = $2, clio_user_email = $3, \
             clio_account_id = $4, clio_account_name = $5, granted_scopes = $6, granted_scopes_version = $7, \
             access_token_ct = $8, access_token_key_id = $9, refresh_token_ct = $10, refresh_token_key_id = $11, \
             access_expires_at = $12, token_lifetime_secs = $13, token_version = token_version + 1, \
             refreshed_at = $14, reconnected_at = $14 WHERE connection_id = $1",
        );
        columns.bind(update.bind(id.0)).execute(&mut *tx).await?;
    } else {
        let insert = sqlx::query(
            "INSERT INTO connections (connection_id, tenant, app_id, principal, region, clio_user_id, clio_user_name, \
             clio_user_email, clio_account_id, clio_account_name, granted_scopes, granted_scopes_version, status, \
             access_token_ct, access_token_key_id, refresh_token_ct, refresh_token_key_id, access_expires_at, \
             token_lifetime_secs, refreshed_at, granted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', $13, $14, $15, $16, $17, $18, $19, $19)",
        )
        .bind(id.0)
        .bind(&app.tenant)
        .bind(app.id.0)
        .bind(&consumed.principal)
        .bind(app.region.as_str())
        .bind(&identity.user_id);
        let inserted = columns.bind(insert).execute(&mut *tx).await;
        if let Err(sqlx::Error::Database(db)) = &inserted
            && db.is_unique_violation()
        {
            return Err(AuthError::FailedPrecondition(
                "another authorization for this person, app and Clio user completed at the same time; retry".into(),
            ));
        }
        inserted?;
    }
    sqlx::query("UPDATE authorization_states SET outcome = 'connected' WHERE id = $1")
        .bind(consumed.id)
        .execute(&mut *tx)
        .await?;
    let connection = connections::load(&mut tx, id, false).await?;
    let actor = || person_actor(&consumed.principal);
    let consent = connection
        .event(EventKind::ConsentRecorded, actor(), now)
        .payload(serde_json::json!({
            "app_name": app.name,
            "client_id": app.client_id,
            "scopes_version": app.scopes_version,
            "declared_scopes": app.declared,
            "risk_tier": scopes.risk_tier(),
            "full_account_access": scopes.is_full_account_access(),
            "region": app.region,
            "mode": consumed.mode,
            "consented_at": now.to_rfc3339(),
        }))
        .build();
    let granted = match &previous {
        None => connection
            .event(EventKind::ConnectionGranted, actor(), now)
            .payload(serde_json::json!({
                "scopes_version": app.scopes_version,
                "clio_account_name": identity.account_name,
                "access_token_expires_at": expires_at.to_rfc3339(),
            }))
            .build(),
        Some(previous) => connection
            .event(EventKind::ConnectionReconnected, actor(), now)
            .payload(serde_json::json!({
                "previous_status": previous.status.as_str(),
                "previous_grant": {"scopes": previous.granted, "scopes_version": previous.granted_version},
                "new_grant": {"scopes": scopes, "scopes_version": app.scopes_version},
                "access_token_expires_at": expires_at.to_rfc3339(),
            }))
            .build(),
    };
    audit_outbox::enqueue(&mut tx, consent).await?;
    audit_outbox::enqueue(&mut tx, granted).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(connection_id = %id, app_id = %app.id, reconnect = previous.is_some(), "connection stored");
    Ok(connection)
}

/// Whether a live connection of another principal holds this Clio login (same region,
/// Clio account and Clio user), through any app: each person connects with their own
/// login, so one Clio user belongs to at most one person at a time. Revoked connections
/// no longer hold it.
///
/// Two people completing as the same Clio user at once would each see no holder, so the
/// check and the insert run under a transaction-scoped advisory lock on the login (the
/// two-key form, whose key space the outbox's one-key lock does not share).
async fn held_by_another_person(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    app: &App,
    principal: &str,
    identity: &WhoAmI,
) -> Result<bool, AuthError> {
    let login = format!(
        "{}/{}/{}",
        app.region.as_str(),
        identity.account_id,
        identity.user_id
    );
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('auth-svc:clio-login'), hashtext($1))")
        .bind(&login)
        .execute(&mut **tx)
        .await?;
    let held: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM connections WHERE region = $1 AND clio_account_id = $2 \
         AND clio_user_id = $3 AND principal <> $4 AND status <> 'revoked')",
    )
    .bind(app.region.as_str())
    .bind(&identity.account_id)
    .bind(&identity.user_id)
    .bind(principal)
    .fetch_one(&mut **tx)
    .await?;
    Ok(held)
}

/// Refuses a completion whose Clio login another person holds: nothing is stored but the
/// ACCESS_DENIED event, committed so the attempt is on record. The message names the Clio
/// user the person signed in as, never who holds it; the event does not name the holder
/// either, as the holder may belong to another tenant's chain (compliance finds the
/// holder by the Clio user id in the refs).
async fn refuse_shared_login(
    ctx: &Context,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    consumed: &ConsumedState,
    app: &App,
    identity: &WhoAmI,
    now: DateTime<Utc>,
) -> Result<Connection, AuthError> {
    let message = format!(
        "Clio user {} is already connected by another person; each person connects with their own Clio login",
        identity.user_id
    );
    let event = EventBuilder::new(
        EventKind::AccessDenied,
        &app.tenant,
        person_actor(&consumed.principal),
        subject_of(subject::Kind::Person, &consumed.principal),
        now,
    )
    .refs(EventRefs {
        app_id: app.id.to_string(),
        principal: consumed.principal.clone(),
        clio_user_id: identity.user_id.clone(),
        clio_account_id: identity.account_id.clone(),
        region: wire_region::to_wire(app.region) as i32,
        ..EventRefs::default()
    })
    .scopes(&app.scope_set())
    .reason(&message)
    .payload(serde_json::json!({
        "refused": "shared_clio_login",
        "app_name": app.name,
        "client_id": app.client_id,
        "mode": consumed.mode,
        "clio_account_name": identity.account_name,
    }))
    .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::warn!(app_id = %app.id, clio_user_id = %identity.user_id, "refused a shared Clio login");
    Err(AuthError::FailedPrecondition(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_codes_are_read_in_every_shape() {
        for raw in [
            "abc123",
            "  abc123\n",
            "Success code=abc123",
            "Success code=abc123&state=x",
        ] {
            match parse_pasted(raw).unwrap() {
                Answer::Code(code) => assert_eq!(code.expose_secret(), "abc123", "{raw}"),
                Answer::Denied(_) => panic!("{raw} read as a denial"),
            }
        }
        assert!(matches!(
            parse_pasted("Failure error=access_denied").unwrap(),
            Answer::Denied(e) if e == "access_denied"
        ));
        assert!(parse_pasted("  ").is_err());
        assert!(parse_pasted("Success code=").is_err());
    }
}
