//! Completing an authorization with what Clio sent back: the state is used (only by a
//! completer it is bound to), the code exchanged, the Clio user looked up, and the grant
//! stored as a connection.

use clio_api::{ClioError, TokenGrant};
use secrecy::{ExposeSecret, SecretString};

use super::refusals::why_not_consumed;
use super::{clio_failure, grant, require_approved, state_hash};
use crate::apps::{self, App};
use crate::browser_binding;
use crate::connections::Connection;
use crate::context::Context;
use crate::domain::{AppId, Mode};
use crate::error::AuthError;
use crate::store;
use crate::store::authorization_states::{Consume, ConsumedState, Outcome, pkce_binding};

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
/// to uses it (see the module doc of `connect`).
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
    let (started_by, mode, browser_binding_hash) = match completer {
        // No cookie binds to nothing: an empty hash matches no state.
        Completer::Browser(cookie) => (
            None,
            Some(Mode::Web),
            Some(
                cookie
                    .map(browser_binding::binding_hash)
                    .unwrap_or_default(),
            ),
        ),
        Completer::Caller(name) => (Some(name), None, None),
    };
    let consume = Consume {
        state_hash: &hash,
        now,
        started_by,
        mode,
        browser_binding_hash: browser_binding_hash.as_deref(),
    };
    // The PKCE verifier leaves the table as the state is used: it is needed once.
    match store::authorization_states::consume(&ctx.pool, &consume).await? {
        Some(consumed) => Ok(consumed),
        None => Err(why_not_consumed(ctx, &hash, completer, now).await?),
    }
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
            store::authorization_states::set_outcome(&ctx.pool, consumed.id, Outcome::Denied)
                .await?;
            tracing::info!(app_id = %consumed.app_id, error = %error, "the person declined at Clio");
            return Err(AuthError::FailedPrecondition(format!(
                "access was denied at Clio ({error}); no connection was made"
            )));
        }
    };
    match finish(ctx, &consumed, code).await {
        Ok(connection) => Ok(connection),
        Err(error) => {
            let failed = Outcome::Failed;
            if let Err(outcome_error) =
                store::authorization_states::set_outcome(&ctx.pool, consumed.id, failed).await
            {
                tracing::warn!(error = %outcome_error, "cannot record the failed authorization");
            }
            Err(error)
        }
    }
}

/// Exchanges the code, looks up who signed in, and stores the connection. Tokens Clio
/// issued that are not stored are revoked at Clio.
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
    match grant::save(ctx, consumed, &app, &identity, &grant).await {
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
