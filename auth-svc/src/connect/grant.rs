//! Storing what Clio granted: the connection (new, or replacing the live one of this
//! person, app and Clio user), the state's outcome, and the CONSENT_RECORDED and
//! CONNECTION_GRANTED (or CONNECTION_RECONNECTED) events, in one transaction.

use chrono::{DateTime, Duration, Utc};
use clio_api::{TokenGrant, WhoAmI};
use proto::common::v1::{AuditEvent, EventKind};
use scope_catalog::ScopeSet;
use sqlx::{Postgres, Transaction};

use super::refusals::refuse_shared_login;
use crate::apps::App;
use crate::audit_events::person_actor;
use crate::connections::Connection;
use crate::context::Context;
use crate::domain::{ConnectionId, ConnectionStatus};
use crate::error::AuthError;
use crate::store;
use crate::store::Inserted;
use crate::store::authorization_states::{ConsumedState, Outcome};
use crate::store::connections::{ClioLogin, Grant, NewConnection, access_binding, refresh_binding};

/// Assumed lifetime when Clio omits `expires_in` (it documents 30 days; 1 h is safe).
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 3_600;

/// Stores the connection and records the consent, in one transaction.
pub(super) async fn save(
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
    let previous = replaced_connection(&mut tx, consumed, app, identity).await?;
    if held_by_another_person(&mut tx, app, &consumed.principal, identity).await? {
        return refuse_shared_login(ctx, tx, consumed, app, identity, now).await;
    }
    let id = previous.as_ref().map_or_else(ConnectionId::new, |p| p.id);
    let access = ctx.vault.seal(&grant.access_token, &access_binding(id))?;
    let refresh = ctx.vault.seal(refresh_token, &refresh_binding(id))?;
    let columns = Grant {
        clio_user_name: &identity.name,
        clio_user_email: &identity.email,
        clio_account_id: &identity.account_id,
        clio_account_name: &identity.account_name,
        scopes: &scopes,
        scopes_version: app.scopes_version,
        access_token: &access,
        refresh_token: &refresh,
        access_expires_at: expires_at,
        token_lifetime_secs: lifetime,
        granted_at: now,
    };
    if previous.is_some() {
        store::connections::reconnect(&mut *tx, id, &columns).await?;
    } else {
        insert(&mut tx, id, consumed, app, identity, columns).await?;
    }
    store::authorization_states::set_outcome(&mut *tx, consumed.id, Outcome::Connected).await?;
    let connection = store::connections::load(&mut *tx, id).await?;
    let stored = Stored {
        connection: &connection,
        previous: previous.as_ref(),
        consumed,
        app,
        identity,
        scopes: &scopes,
        expires_at,
        at: now,
    };
    audit_outbox::enqueue(&mut tx, stored.consent_event()).await?;
    audit_outbox::enqueue(&mut tx, stored.granted_event()).await?;
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(connection_id = %id, app_id = %app.id, reconnect = previous.is_some(), "connection stored");
    Ok(connection)
}

/// The connection this grant replaces, locked: the one the authorization reconnects, or
/// else the live one of this person, app and Clio user. It must be live and of the same
/// Clio user.
async fn replaced_connection(
    tx: &mut Transaction<'_, Postgres>,
    consumed: &ConsumedState,
    app: &App,
    identity: &WhoAmI,
) -> Result<Option<Connection>, AuthError> {
    let existing = match consumed.reconnect_connection_id {
        Some(id) => Some(ConnectionId(id)),
        None => {
            store::connections::find_live(&mut **tx, app.id, &consumed.principal, &identity.user_id)
                .await?
        }
    };
    let Some(id) = existing else {
        return Ok(None);
    };
    let previous = store::connections::load_for_update(&mut **tx, id).await?;
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
    Ok(Some(previous))
}

/// Whether a live connection of another principal holds this Clio login (same region,
/// Clio account and Clio user), through any app: each person connects with their own
/// login, so one Clio user belongs to at most one person at a time. Revoked connections
/// no longer hold it.
///
/// Two people completing as the same Clio user at once would each see no holder, so the
/// check and the insert run under a transaction-scoped advisory lock on the login.
async fn held_by_another_person(
    tx: &mut Transaction<'_, Postgres>,
    app: &App,
    principal: &str,
    identity: &WhoAmI,
) -> Result<bool, AuthError> {
    let login = ClioLogin {
        region: app.region,
        account_id: &identity.account_id,
        user_id: &identity.user_id,
    };
    store::connections::lock_clio_login(&mut **tx, &login).await?;
    store::connections::clio_login_held_by_other(&mut **tx, &login, principal).await
}

/// Inserts the new connection; a live one of this person, app and Clio user written
/// meanwhile (by a completion at the same time) refuses it.
async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    id: ConnectionId,
    consumed: &ConsumedState,
    app: &App,
    identity: &WhoAmI,
    grant: Grant<'_>,
) -> Result<(), AuthError> {
    let new = NewConnection {
        id,
        tenant: &app.tenant,
        app_id: app.id,
        principal: &consumed.principal,
        region: app.region,
        clio_user_id: &identity.user_id,
        grant,
    };
    match store::connections::insert(&mut **tx, &new).await? {
        Inserted::New => Ok(()),
        Inserted::Duplicate => Err(AuthError::FailedPrecondition(
            "another authorization for this person, app and Clio user completed at the same time; retry".into(),
        )),
    }
}

/// A stored grant, for its events.
struct Stored<'a> {
    connection: &'a Connection,
    /// The connection as it was before a reconnect.
    previous: Option<&'a Connection>,
    consumed: &'a ConsumedState,
    app: &'a App,
    identity: &'a WhoAmI,
    scopes: &'a ScopeSet,
    expires_at: DateTime<Utc>,
    at: DateTime<Utc>,
}

impl Stored<'_> {
    fn consent_event(&self) -> AuditEvent {
        let app = self.app;
        self.connection
            .event(
                EventKind::ConsentRecorded,
                person_actor(&self.consumed.principal),
                self.at,
            )
            .payload(serde_json::json!({
                "app_name": app.name,
                "client_id": app.client_id,
                "scopes_version": app.scopes_version,
                "declared_scopes": app.declared,
                "risk_tier": self.scopes.risk_tier(),
                "full_account_access": self.scopes.is_full_account_access(),
                "region": app.region,
                "mode": self.consumed.mode,
                "consented_at": self.at.to_rfc3339(),
            }))
            .build()
    }

    /// CONNECTION_GRANTED for a new connection, CONNECTION_RECONNECTED for a replaced one.
    fn granted_event(&self) -> AuditEvent {
        let actor = person_actor(&self.consumed.principal);
        let expires_at = self.expires_at.to_rfc3339();
        match self.previous {
            None => self
                .connection
                .event(EventKind::ConnectionGranted, actor, self.at)
                .payload(serde_json::json!({
                    "scopes_version": self.app.scopes_version,
                    "clio_account_name": self.identity.account_name,
                    "access_token_expires_at": expires_at,
                }))
                .build(),
            Some(previous) => self
                .connection
                .event(EventKind::ConnectionReconnected, actor, self.at)
                .payload(serde_json::json!({
                    "previous_status": previous.status.as_str(),
                    "previous_grant": {"scopes": previous.granted, "scopes_version": previous.granted_version},
                    "new_grant": {"scopes": self.scopes, "scopes_version": self.app.scopes_version},
                    "access_token_expires_at": expires_at,
                }))
                .build(),
        }
    }
}
