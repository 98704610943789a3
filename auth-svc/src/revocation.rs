//! Revoking connections: one, or every connection of an app (every connection of a
//! person is [`crate::offboarding`]).
//!
//! A revocation first makes the connection unusable locally (status `revoked`, tokens
//! removed from the row, kept encrypted only in `pending_deauthorizations` for the call to
//! Clio) and commits; then it calls Clio's deauthorize; then it records CONNECTION_REVOKED
//! with Clio's answer and drops the token if Clio is done with it. If Clio failed, the
//! retry worker ([`crate::deauthorize_retry`]) keeps trying and records
//! REVOCATION_RETRIED when it finally succeeds. If the process dies between the first
//! commit and the event, the worker records CONNECTION_REVOKED itself, so the event is
//! never lost and always carries Clio's real answer.

use chrono::{DateTime, Duration, Utc};
use clio_api::{AppCredentials, ClioError, Region, TokenGrant};
use futures_util::StreamExt;
use proto::auth::v1 as pb;
use proto::common::v1::{AuditEvent, EventKind, EventRefs, subject};
use secrecy::SecretString;
use service_runtime::Caller;
use sqlx::{PgConnection, Postgres, Transaction};

use proto::time::timestamp;

use crate::audit_events::{EventBuilder, service_actor, subject_of};
use crate::connections::Connection;
use crate::context::Context;
use crate::domain::{AppId, AppStatus, ConnectionId, ConnectionStatus};
use crate::error::AuthError;
use crate::store;
use crate::store::apps::AppRevocation;
use crate::store::connections::{ConnectionRevocation, access_binding, refresh_binding};
use crate::store::pending_deauthorizations::{self, NewPendingDeauthorization};
use crate::token_vault::{Sealed, TokenVault};
use crate::wire_region;

/// What Clio said to the deauthorize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClioOutcome {
    Revoked,
    AlreadyInvalid,
    FailedRetrying,
    NothingToRevoke,
}

impl ClioOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ClioOutcome::Revoked => "revoked",
            ClioOutcome::AlreadyInvalid => "already_invalid",
            ClioOutcome::FailedRetrying => "failed_retrying",
            ClioOutcome::NothingToRevoke => "nothing_to_revoke",
        }
    }

    pub fn to_wire(self) -> pb::ClioRevocationOutcome {
        match self {
            ClioOutcome::Revoked => pb::ClioRevocationOutcome::Revoked,
            ClioOutcome::AlreadyInvalid => pb::ClioRevocationOutcome::AlreadyInvalid,
            ClioOutcome::FailedRetrying => pb::ClioRevocationOutcome::FailedRetrying,
            ClioOutcome::NothingToRevoke => pb::ClioRevocationOutcome::NothingToRevoke,
        }
    }

    /// Clio holds no live grant any more: the kept token can go.
    pub fn is_final(self) -> bool {
        !matches!(self, ClioOutcome::FailedRetrying)
    }
}

#[derive(Debug, Clone)]
pub struct Revocation {
    pub connection: ConnectionId,
    pub outcome: ClioOutcome,
    pub detail: String,
    pub revoked_at: DateTime<Utc>,
}

impl Revocation {
    pub fn to_wire(&self) -> pb::RevocationResult {
        pb::RevocationResult {
            connection_id: self.connection.to_string(),
            clio_outcome: self.outcome.to_wire() as i32,
            clio_detail: self.detail.clone(),
            revoked_at: Some(timestamp(self.revoked_at)),
        }
    }
}

/// Tokens to deauthorize with.
pub struct HeldTokens {
    pub access: SecretString,
    pub refresh: Option<SecretString>,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// Set when an attempt refreshed at Clio. A rotating Clio retires the refresh token it
    /// was given, so a later retry must start from these tokens, not the ones kept before.
    pub changed: bool,
}

impl HeldTokens {
    pub fn new(
        access: SecretString,
        refresh: Option<SecretString>,
        access_expires_at: Option<DateTime<Utc>>,
    ) -> HeldTokens {
        HeldTokens {
            access,
            refresh,
            access_expires_at,
            changed: false,
        }
    }

    /// The tokens sealed for the pending_deauthorizations row of `id` (access, refresh).
    fn seal_pending(
        &self,
        vault: &TokenVault,
        id: ConnectionId,
    ) -> Result<(Sealed, Option<Sealed>), AuthError> {
        let access = vault.seal(&self.access, &pending_deauthorizations::access_binding(id))?;
        let refresh = self
            .refresh
            .as_ref()
            .map(|r| vault.seal(r, &pending_deauthorizations::refresh_binding(id)))
            .transpose()?;
        Ok((access, refresh))
    }

    /// Takes the tokens of a refresh. Clio usually keeps the refresh token and sends none;
    /// only a sent one replaces it.
    fn adopt(&mut self, grant: TokenGrant, now: DateTime<Utc>) {
        self.access = grant.access_token;
        if let Some(refresh) = grant.refresh_token {
            self.refresh = Some(refresh);
        }
        self.access_expires_at = grant
            .expires_in
            .and_then(|lifetime| Duration::from_std(lifetime).ok())
            .map(|lifetime| now + lifetime);
        self.changed = true;
    }
}

/// What a deauthorize attempt ends with when it cannot go on.
type Settled = (ClioOutcome, String);

fn confirmed() -> Settled {
    (
        ClioOutcome::Revoked,
        "Clio confirmed the deauthorize".into(),
    )
}

/// Refreshes the held tokens at Clio and adopts what it issues. A refused refresh token
/// means the grant is already dead.
async fn refresh_held(
    ctx: &Context,
    region: Region,
    credentials: &AppCredentials,
    tokens: &mut HeldTokens,
) -> Result<(), Settled> {
    let Some(refresh) = &tokens.refresh else {
        return Err((
            ClioOutcome::AlreadyInvalid,
            "no refresh token is held".into(),
        ));
    };
    match ctx.clio.refresh(region, credentials, refresh).await {
        Ok(grant) => {
            tokens.adopt(grant, ctx.now());
            Ok(())
        }
        Err(ClioError::InvalidGrant { description }) => Err((
            ClioOutcome::AlreadyInvalid,
            format!("refresh token refused: {description}"),
        )),
        Err(error) => Err((ClioOutcome::FailedRetrying, error.to_string())),
    }
}

/// Calls Clio's deauthorize. An expired access token cannot deauthorize, so it is first
/// refreshed (the refresh token is what must die); a token Clio already refuses, whose
/// refresh token is refused too, was already revoked. Tokens a refresh issues replace
/// `tokens` (and set `changed`): the caller keeps them for the retry if this attempt fails.
pub async fn deauthorize_at_clio(
    ctx: &Context,
    region: Region,
    credentials: &AppCredentials,
    tokens: &mut HeldTokens,
) -> Settled {
    let expired = tokens.access_expires_at.is_some_and(|at| at <= ctx.now());
    if expired
        && tokens.refresh.is_some()
        && let Err(settled) = refresh_held(ctx, region, credentials, tokens).await
    {
        return settled;
    }
    match ctx.clio.deauthorize(region, &tokens.access).await {
        Ok(()) => confirmed(),
        // The access token is dead; make sure the refresh token is too (unless it was
        // just refreshed, so the token refused is the one Clio just issued).
        Err(ClioError::InvalidToken { description } | ClioError::InvalidGrant { description })
            if !expired && tokens.refresh.is_some() =>
        {
            if let Err((outcome, detail)) = refresh_held(ctx, region, credentials, tokens).await {
                return (
                    outcome,
                    format!("access token refused: {description}; {detail}"),
                );
            }
            match ctx.clio.deauthorize(region, &tokens.access).await {
                Ok(()) => confirmed(),
                Err(error) => (ClioOutcome::FailedRetrying, error.to_string()),
            }
        }
        Err(ClioError::InvalidToken { description } | ClioError::InvalidGrant { description }) => (
            ClioOutcome::AlreadyInvalid,
            format!("token already refused: {description}"),
        ),
        Err(error) => (ClioOutcome::FailedRetrying, error.to_string()),
    }
}

/// Keeps the tokens a failed attempt ended with for the next retry, sealed under the
/// pending row's bindings. Run in the transaction that records the attempt, so the row
/// never says "failed" while holding tokens Clio has already retired.
pub async fn keep_for_retry(
    conn: &mut PgConnection,
    vault: &TokenVault,
    id: ConnectionId,
    tokens: &HeldTokens,
) -> Result<(), AuthError> {
    if !tokens.changed {
        return Ok(());
    }
    let (access, refresh) = tokens.seal_pending(vault, id)?;
    pending_deauthorizations::replace_tokens(conn, id, &access, refresh.as_ref()).await
}

/// The CONNECTION_REVOKED event. `clio_confirmed_at` is when Clio's answer that the grant
/// is dead came (the offboarding report's clock stops there), unset while Clio has not
/// confirmed; `attempts` counts the deauthorize attempts so far.
pub fn revoked_event(
    connection: &Connection,
    revocation: &ConnectionRevocation<'_>,
    (outcome, detail): (ClioOutcome, &str),
    clio_confirmed_at: Option<DateTime<Utc>>,
    attempts: u32,
) -> AuditEvent {
    let mut payload = serde_json::json!({
        "clio_outcome": outcome.as_str(),
        "detail": detail,
        "attempts": attempts,
    });
    if let Some(at) = clio_confirmed_at {
        payload["clio_confirmed_at"] = serde_json::Value::String(at.to_rfc3339());
    }
    connection
        .event(
            EventKind::ConnectionRevoked,
            service_actor(revocation.by),
            revocation.at,
        )
        .reason(revocation.reason)
        .payload(payload)
        .build()
}

/// Revokes one connection. Revoking a revoked connection changes nothing and says so.
#[tracing::instrument(skip_all, fields(connection_id = %id, actor = %actor))]
pub async fn revoke_connection(
    ctx: &Context,
    actor: &str,
    id: ConnectionId,
    reason: &str,
) -> Result<Revocation, AuthError> {
    let now = ctx.now();
    let revocation = ConnectionRevocation {
        at: now,
        by: actor,
        reason,
    };
    let mut tx = ctx.pool.begin().await?;
    let connection = store::connections::load_for_update(&mut *tx, id).await?;
    if connection.status == ConnectionStatus::Revoked {
        return Ok(already_revoked(&connection, now));
    }
    store::connections::mark_revoked(&mut *tx, id, &revocation).await?;
    let Some(mut tokens) = held_tokens(ctx, &connection)? else {
        return revoke_holding_nothing(ctx, tx, &connection, &revocation).await;
    };
    keep_pending(ctx, &mut tx, &connection, &tokens, &revocation).await?;
    let app = store::apps::load(&mut *tx, connection.app_id).await?;
    tx.commit().await?;
    // From here on the connection is unusable, whatever Clio answers.

    let credentials = app.credentials(&ctx.vault)?;
    let (outcome, detail) =
        deauthorize_at_clio(ctx, connection.region, &credentials, &mut tokens).await;
    let answered_at = ctx.now();
    if outcome == ClioOutcome::FailedRetrying {
        tracing::warn!(detail = %detail, "Clio deauthorize failed; will retry");
    }
    let answer = FirstAnswer {
        connection: &connection,
        revocation: &revocation,
        tokens: &tokens,
        outcome: (outcome, &detail),
        answered_at,
    };
    record_first_answer(ctx, &answer).await?;
    Ok(Revocation {
        connection: id,
        outcome,
        detail,
        revoked_at: now,
    })
}

fn already_revoked(connection: &Connection, now: DateTime<Utc>) -> Revocation {
    Revocation {
        connection: connection.id,
        outcome: ClioOutcome::NothingToRevoke,
        detail: format!(
            "already revoked by {}",
            connection.revoked_by.as_deref().unwrap_or("unknown")
        ),
        revoked_at: connection.revoked_at.unwrap_or(now),
    }
}

/// The tokens of a loaded connection, decrypted; `None` when it holds none.
fn held_tokens(ctx: &Context, connection: &Connection) -> Result<Option<HeldTokens>, AuthError> {
    let Some(access_ct) = &connection.access_token_ct else {
        return Ok(None);
    };
    let access = ctx.vault.open(access_ct, &access_binding(connection.id))?;
    let refresh = connection
        .refresh_token_ct
        .as_deref()
        .map(|ct| ctx.vault.open(ct, &refresh_binding(connection.id)))
        .transpose()?;
    Ok(Some(HeldTokens::new(
        access,
        refresh,
        connection.access_expires_at,
    )))
}

/// Finishes revoking a connection that held no token: nothing can be live at Clio, so
/// the revocation is confirmed at once, in the transaction that marked it.
async fn revoke_holding_nothing(
    ctx: &Context,
    mut tx: Transaction<'_, Postgres>,
    connection: &Connection,
    revocation: &ConnectionRevocation<'_>,
) -> Result<Revocation, AuthError> {
    let detail = "no token was held";
    let settled = (ClioOutcome::NothingToRevoke, detail);
    let event = revoked_event(connection, revocation, settled, Some(revocation.at), 0);
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.events_committed();
    Ok(Revocation {
        connection: connection.id,
        outcome: ClioOutcome::NothingToRevoke,
        detail: detail.into(),
        revoked_at: revocation.at,
    })
}

/// Keeps the connection's tokens, sealed, for the deauthorize at Clio and its retries.
async fn keep_pending(
    ctx: &Context,
    tx: &mut Transaction<'_, Postgres>,
    connection: &Connection,
    tokens: &HeldTokens,
    revocation: &ConnectionRevocation<'_>,
) -> Result<(), AuthError> {
    let (access, refresh) = tokens.seal_pending(&ctx.vault, connection.id)?;
    let first_retry = Duration::milliseconds(
        i64::try_from(ctx.config.revocation.first_retry_after_ms).unwrap_or(10_000),
    );
    let pending = NewPendingDeauthorization {
        connection: connection.id,
        region: connection.region,
        app_id: connection.app_id,
        access_token: &access,
        refresh_token: refresh.as_ref(),
        revoked_by: revocation.by,
        revocation_reason: revocation.reason,
        revoked_at: revocation.at,
        next_attempt_at: revocation.at + first_retry,
    };
    pending_deauthorizations::insert(&mut **tx, &pending).await
}

/// Clio's answer to a revocation's own deauthorize.
struct FirstAnswer<'a> {
    connection: &'a Connection,
    revocation: &'a ConnectionRevocation<'a>,
    /// The tokens the attempt ended with.
    tokens: &'a HeldTokens,
    outcome: (ClioOutcome, &'a str),
    answered_at: DateTime<Utc>,
}

/// Records Clio's first answer with CONNECTION_REVOKED: the kept tokens go if Clio is done
/// with them, else they stay for the retry worker. Nothing is written if the worker took
/// the revocation over meanwhile (its row gone, or its event recorded).
async fn record_first_answer(ctx: &Context, answer: &FirstAnswer<'_>) -> Result<(), AuthError> {
    let id = answer.connection.id;
    let (outcome, detail) = answer.outcome;
    let mut tx = ctx.pool.begin().await?;
    let event_recorded = pending_deauthorizations::lock_event_recorded(&mut *tx, id).await?;
    if event_recorded == Some(false) {
        if outcome.is_final() {
            pending_deauthorizations::delete(&mut *tx, id).await?;
        } else {
            keep_for_retry(&mut tx, &ctx.vault, id, answer.tokens).await?;
            pending_deauthorizations::record_first_failure(&mut *tx, id, detail).await?;
        }
        let confirmed_at = outcome.is_final().then_some(answer.answered_at);
        let event = revoked_event(
            answer.connection,
            answer.revocation,
            answer.outcome,
            confirmed_at,
            1,
        );
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    Ok(())
}

/// Revokes many connections at once (bounded concurrency); every one is attempted, and
/// each one's outcome (or error) is returned, in connection order.
pub(crate) async fn revoke_each(
    ctx: &Context,
    actor: &str,
    ids: Vec<ConnectionId>,
    reason: &str,
) -> Vec<(ConnectionId, Result<Revocation, AuthError>)> {
    let concurrency = ctx.config.revocation.concurrency.max(1);
    let mut outcomes: Vec<(ConnectionId, Result<Revocation, AuthError>)> =
        futures_util::stream::iter(ids)
            .map(|id| async move { (id, revoke_connection(ctx, actor, id, reason).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    outcomes.sort_by_key(|(id, _)| *id);
    outcomes
}

/// Revokes many connections; the first error fails the whole (after every one is tried).
async fn revoke_all(
    ctx: &Context,
    actor: &str,
    ids: Vec<ConnectionId>,
    reason: &str,
) -> Result<Vec<Revocation>, AuthError> {
    let outcomes = revoke_each(ctx, actor, ids, reason).await;
    let mut results = Vec::with_capacity(outcomes.len());
    let mut first_error = None;
    for (_, outcome) in outcomes {
        match outcome {
            Ok(result) => results.push(result),
            Err(error) => {
                tracing::warn!(%error, "one revocation failed");
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    results.sort_by_key(|r| r.connection);
    Ok(results)
}

/// Marks the app revoked (nobody can connect through it any more) and revokes every
/// live connection made through it.
#[tracing::instrument(skip_all, fields(app_id = %id, actor = %caller.name))]
pub async fn revoke_app(
    ctx: &Context,
    caller: &Caller,
    id: AppId,
    reason: &str,
) -> Result<Vec<Revocation>, AuthError> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let app = store::apps::load_for_update(&mut *tx, id).await?;
    if app.status != AppStatus::Revoked {
        let revocation = AppRevocation {
            by: &caller.name,
            at: now,
            reason,
        };
        store::apps::mark_revoked(&mut *tx, id, &revocation).await?;
        let event = EventBuilder::new(
            EventKind::AppRevoked,
            &app.tenant,
            service_actor(&caller.name),
            subject_of(subject::Kind::App, id),
            now,
        )
        .refs(EventRefs {
            app_id: id.to_string(),
            region: wire_region::to_wire(app.region) as i32,
            ..EventRefs::default()
        })
        .scopes(&app.scope_set())
        .reason(reason)
        .build();
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    let ids = store::connections::live_of_app(&ctx.pool, id).await?;
    revoke_all(ctx, &caller.name, ids, reason).await
}
