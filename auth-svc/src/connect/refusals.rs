//! Completions that are refused: why a state could not be used, and the ACCESS_DENIED
//! events of refused completers and of shared Clio logins.

use chrono::{DateTime, Utc};
use clio_api::WhoAmI;
use proto::common::v1::{Actor, EventKind, EventRefs, subject};
use sqlx::{Postgres, Transaction};

use super::complete::Completer;
use crate::apps::App;
use crate::audit_events::{EventBuilder, person_actor, service_actor, subject_of};
use crate::browser_binding;
use crate::connections::Connection;
use crate::context::Context;
use crate::domain::Mode;
use crate::error::AuthError;
use crate::store;
use crate::store::authorization_states::{ConsumedState, SeenState};
use crate::wire_region;

/// Why `consume_state` found nothing to consume. The completer's binding is judged first,
/// so a caller the state is not bound to learns nothing of its use or expiry.
pub(super) async fn why_not_consumed(
    ctx: &Context,
    hash: &[u8],
    completer: Completer<'_>,
    now: DateTime<Utc>,
) -> Result<AuthError, AuthError> {
    let Some(seen) = store::authorization_states::find_by_hash(&ctx.pool, hash).await? else {
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
    seen: &SeenState,
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
    seen: &SeenState,
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
    seen: &SeenState,
    actor: Actor,
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

/// Refuses a completion whose Clio login another person holds: nothing is stored but the
/// ACCESS_DENIED event, committed (in `tx`, so the attempt is on record). The message
/// names the Clio user the person signed in as, never who holds it; the event does not
/// name the holder either, as the holder may belong to another tenant's chain (compliance
/// finds the holder by the Clio user id in the refs).
pub(super) async fn refuse_shared_login(
    ctx: &Context,
    mut tx: Transaction<'_, Postgres>,
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
