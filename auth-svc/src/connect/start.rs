//! Starting an authorization: a fresh state, a PKCE verifier if the app uses PKCE, and
//! the link the person opens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use clio_api::{AuthorizeRequest, Pkce};
use proto::auth::v1 as pb;
use rand::RngCore;
use secrecy::SecretString;
use service_runtime::Caller;
use uuid::Uuid;

use super::{require_approved, state_hash};
use crate::apps::{self, App};
use crate::browser_binding;
use crate::connections;
use crate::context::Context;
use crate::domain::{AppId, ConnectionId, ConnectionStatus, Mode, Principal};
use crate::error::AuthError;
use crate::store;
use crate::store::authorization_states::{NewAuthorizationState, pkce_binding};

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

/// The redirect URI of a mode: auth-svc's callback, or Clio's approval page. The app
/// must list it.
fn redirect_uri(ctx: &Context, app: &App, mode: Mode) -> Result<String, AuthError> {
    let redirect = match mode {
        Mode::Web => format!(
            "{}/oauth/callback",
            ctx.config.public_base_url.trim_end_matches('/')
        ),
        Mode::OutOfBand => ctx.clio.regions().approval_redirect_uri(app.region),
    };
    if !app.redirect_uris.contains(&redirect) {
        return Err(AuthError::FailedPrecondition(format!(
            "app {} does not list the redirect URI {redirect} that {mode} mode needs",
            app.id
        )));
    }
    Ok(redirect)
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
        require_reconnectable(ctx, &app, &request.principal, reconnect).await?;
    }
    let redirect = redirect_uri(ctx, &app, request.mode)?;
    let state = new_state();
    let id = Uuid::now_v7();
    let now = ctx.now();
    let ttl = i64::try_from(ctx.config.authorization.state_ttl_secs).unwrap_or(600);
    let expires_at = now + Duration::seconds(ttl);
    // PKCE verifiers of authorizations nobody completed are useless once expired.
    store::authorization_states::forget_expired_verifiers(&ctx.pool, now).await?;
    let pkce = app.pkce_enabled.then(Pkce::generate);
    let sealed = pkce
        .as_ref()
        .map(|p| ctx.vault.seal(p.verifier(), &pkce_binding(id)))
        .transpose()?;
    let hash = state_hash(&state);
    let stored = NewAuthorizationState {
        id,
        state_hash: &hash,
        app_id: app.id,
        principal: &request.principal.0,
        mode: request.mode,
        redirect_uri: &redirect,
        scopes_version: app.scopes_version,
        reconnect: request.reconnect,
        pkce_verifier: sealed.as_ref(),
        created_at: now,
        expires_at,
        started_by: &caller.name,
    };
    store::authorization_states::insert(&ctx.pool, &stored).await?;
    let authorize = AuthorizeRequest {
        region: app.region,
        client_id: &app.client_id,
        redirect_uri: &redirect,
        state: &state,
        pkce: pkce.as_ref(),
    };
    let url = authorization_link(ctx, id, request.mode, &authorize).await?;
    Ok(Started {
        authorization_url: url,
        state: SecretString::from(state),
        expires_at,
        mode: request.mode,
    })
}

/// A reconnect renews a live connection of the same app and person.
async fn require_reconnectable(
    ctx: &Context,
    app: &App,
    principal: &Principal,
    reconnect: ConnectionId,
) -> Result<(), AuthError> {
    let existing = connections::get(ctx, reconnect).await?;
    if existing.app_id != app.id || existing.principal != principal.0 {
        return Err(AuthError::FailedPrecondition(format!(
            "connection {reconnect} belongs to another app or person"
        )));
    }
    if existing.status == ConnectionStatus::Revoked {
        return Err(AuthError::FailedPrecondition(format!(
            "connection {reconnect} is revoked; connect anew instead"
        )));
    }
    Ok(())
}

/// The link the person opens: Clio's authorize URL out of band. The web flow sends the
/// person through auth-svc's start page first, which binds the flow to their browser (see
/// `browser_binding`); the state's row keeps Clio's URL for it, less the state.
async fn authorization_link(
    ctx: &Context,
    id: Uuid,
    mode: Mode,
    authorize: &AuthorizeRequest<'_>,
) -> Result<String, AuthError> {
    let url = ctx
        .clio
        .authorize_url(authorize)
        .map_err(|e| AuthError::Internal(format!("authorize URL: {e}")))?;
    match mode {
        Mode::OutOfBand => Ok(url),
        Mode::Web => {
            let kept = without_state(&url)?;
            store::authorization_states::set_clio_authorize_url(&ctx.pool, id, &kept).await?;
            Ok(browser_binding::start_link(ctx, authorize.state))
        }
    }
}

/// 32 random bytes, URL-safe.
fn new_state() -> String {
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    URL_SAFE_NO_PAD.encode(random)
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
