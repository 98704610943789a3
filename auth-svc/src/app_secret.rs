//! Replacing an app's client secret after it was regenerated in Clio's developer portal.
//!
//! Clio invalidates the old secret at once, so until the new one is stored every refresh
//! and code exchange of the app fails with `invalid_client`. The new secret is sealed under
//! the active key like the first one, the failure back-off of the app's connections is
//! cleared so they refresh at once, and the replacement is audited without the secret.

use proto::auth::v1 as pb;
use proto::common::v1::EventKind;
use secrecy::SecretString;
use service_runtime::Caller;

use crate::apps::App;
use crate::context::Context;
use crate::domain::{AppId, AppStatus, required_text};
use crate::error::AuthError;
use crate::store;
use crate::store::apps::secret_binding;

/// Clio's client secrets are short; anything this long is a paste gone wrong.
const MAX_SECRET_LEN: usize = 1_024;

/// A validated `ReplaceAppSecretRequest`.
pub struct SecretReplacement {
    pub app: AppId,
    pub client_secret: SecretString,
    pub reason: String,
}

impl TryFrom<pb::ReplaceAppSecretRequest> for SecretReplacement {
    type Error = AuthError;

    fn try_from(request: pb::ReplaceAppSecretRequest) -> Result<Self, AuthError> {
        let secret = request.client_secret.trim();
        if secret.is_empty() {
            return Err(AuthError::invalid("client_secret", "must not be empty"));
        }
        if secret.len() > MAX_SECRET_LEN || secret.chars().any(char::is_control) {
            return Err(AuthError::invalid(
                "client_secret",
                format!("must be at most {MAX_SECRET_LEN} printable characters"),
            ));
        }
        Ok(SecretReplacement {
            app: AppId::parse("app_id", &request.app_id)?,
            client_secret: SecretString::from(secret.to_owned()),
            reason: required_text("reason", &request.reason, 2_000)?,
        })
    }
}

#[tracing::instrument(skip_all, fields(app_id = %replacement.app))]
pub async fn replace(
    ctx: &Context,
    caller: &Caller,
    replacement: SecretReplacement,
) -> Result<App, AuthError> {
    let now = ctx.now();
    let sealed = ctx
        .vault
        .seal(&replacement.client_secret, &secret_binding(replacement.app))?;
    let mut tx = ctx.pool.begin().await?;
    let app = store::apps::load_for_update(&mut *tx, replacement.app).await?;
    if app.status == AppStatus::Revoked {
        return Err(AuthError::FailedPrecondition(format!(
            "app {} is revoked: its connections are gone at Clio, so there is nothing to \
             refresh with a new secret",
            replacement.app
        )));
    }
    store::apps::replace_client_secret(&mut *tx, replacement.app, &sealed).await?;
    // Refreshes that failed on the old secret wait out a back-off; the cause is gone.
    let retried =
        store::connections::refresh::clear_backoff_of_app(&mut *tx, replacement.app).await?;
    let event = app
        .event(EventKind::AppSecretReplaced, caller, now)
        .reason(&replacement.reason)
        .payload(serde_json::json!({
            "client_id": app.client_id,
            "sealed_under_key": sealed.key_id,
            "connections_retried": retried,
        }))
        .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    let app = store::apps::load(&mut *tx, replacement.app).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(app_id = %replacement.app, connections_retried = retried, "app client secret replaced");
    Ok(app)
}
