//! Revoking connections: one, every connection of a person (offboarding), or every
//! connection of an app.
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
use proto::common::v1::{EventKind, EventRefs, subject};
use secrecy::SecretString;
use service_runtime::Caller;
use sqlx::PgConnection;

use crate::apps;
use proto::time::timestamp;

use crate::audit_events::{EventBuilder, service_actor, subject_of};
use crate::connections::{self, Connection};
use crate::context::Context;
use crate::domain::{
    AppId, AppStatus, ConnectionId, ConnectionStatus, Principal, Tenant, required_text,
};
use crate::error::AuthError;
use crate::token_vault::{Binding, Sealed, TokenVault};
use crate::wire_region;

pub fn pending_access_binding(id: ConnectionId) -> Binding {
    Binding::new("pending_deauthorizations", "access_token", id)
}

pub fn pending_refresh_binding(id: ConnectionId) -> Binding {
    Binding::new("pending_deauthorizations", "refresh_token", id)
}

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
        let access = vault.seal(&self.access, &pending_access_binding(id))?;
        let refresh = self
            .refresh
            .as_ref()
            .map(|r| vault.seal(r, &pending_refresh_binding(id)))
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
    sqlx::query(
        "UPDATE pending_deauthorizations SET access_token_ct = $2, access_token_key_id = $3, \
         refresh_token_ct = $4, refresh_token_key_id = $5 WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(&access.ciphertext)
    .bind(&access.key_id)
    .bind(refresh.as_ref().map(|s| s.ciphertext.clone()))
    .bind(refresh.as_ref().map(|s| s.key_id.clone()))
    .execute(conn)
    .await?;
    Ok(())
}

/// The CONNECTION_REVOKED event. `clio_confirmed_at` is when Clio's answer that the grant
/// is dead came (the offboarding report's clock stops there), unset while Clio has not
/// confirmed; `attempts` counts the deauthorize attempts so far.
pub fn revoked_event(
    connection: &Connection,
    revoked_by: &str,
    reason: &str,
    revoked_at: DateTime<Utc>,
    (outcome, detail): (ClioOutcome, &str),
    clio_confirmed_at: Option<DateTime<Utc>>,
    attempts: u32,
) -> proto::common::v1::AuditEvent {
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
            service_actor(revoked_by),
            revoked_at,
        )
        .reason(reason)
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
    let mut tx = ctx.pool.begin().await?;
    let connection = connections::load(&mut tx, id, true).await?;
    if connection.status == ConnectionStatus::Revoked {
        return Ok(Revocation {
            connection: id,
            outcome: ClioOutcome::NothingToRevoke,
            detail: format!(
                "already revoked by {}",
                connection.revoked_by.as_deref().unwrap_or("unknown")
            ),
            revoked_at: connection.revoked_at.unwrap_or(now),
        });
    }
    sqlx::query(
        "UPDATE connections SET status = 'revoked', revoked_at = $2, revoked_by = $3, revocation_reason = $4, \
         access_token_ct = NULL, access_token_key_id = NULL, refresh_token_ct = NULL, refresh_token_key_id = NULL, \
         token_version = token_version + 1 WHERE connection_id = $1",
    )
    .bind(id.0)
    .bind(now)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;

    let Some(access_ct) = &connection.access_token_ct else {
        let detail = "no token was held";
        // Nothing is held, so nothing can be live at Clio: confirmed at once.
        let event = revoked_event(
            &connection,
            actor,
            reason,
            now,
            (ClioOutcome::NothingToRevoke, detail),
            Some(now),
            0,
        );
        audit_outbox::enqueue(&mut tx, event).await?;
        tx.commit().await?;
        ctx.events_committed();
        return Ok(Revocation {
            connection: id,
            outcome: ClioOutcome::NothingToRevoke,
            detail: detail.into(),
            revoked_at: now,
        });
    };
    let access = ctx
        .vault
        .open(access_ct, &connections::access_binding(id))?;
    let refresh = connection
        .refresh_token_ct
        .as_deref()
        .map(|ct| ctx.vault.open(ct, &connections::refresh_binding(id)))
        .transpose()?;
    let mut tokens = HeldTokens::new(access, refresh, connection.access_expires_at);
    let (sealed_access, sealed_refresh) = tokens.seal_pending(&ctx.vault, id)?;
    let first_retry = Duration::milliseconds(
        i64::try_from(ctx.config.revocation.first_retry_after_ms).unwrap_or(10_000),
    );
    sqlx::query(
        "INSERT INTO pending_deauthorizations (connection_id, region, app_id, access_token_ct, access_token_key_id, \
         refresh_token_ct, refresh_token_key_id, revoked_by, revocation_reason, revoked_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.0)
    .bind(connection.region.as_str())
    .bind(connection.app_id.0)
    .bind(&sealed_access.ciphertext)
    .bind(&sealed_access.key_id)
    .bind(sealed_refresh.as_ref().map(|s| s.ciphertext.clone()))
    .bind(sealed_refresh.as_ref().map(|s| s.key_id.clone()))
    .bind(actor)
    .bind(reason)
    .bind(now)
    .bind(now + first_retry)
    .execute(&mut *tx)
    .await?;
    let app = apps::load(&mut tx, connection.app_id, false).await?;
    tx.commit().await?;
    // From here on the connection is unusable, whatever Clio answers.

    let credentials = app.credentials(&ctx.vault)?;
    let (outcome, detail) =
        deauthorize_at_clio(ctx, connection.region, &credentials, &mut tokens).await;
    let answered_at = ctx.now();
    if outcome == ClioOutcome::FailedRetrying {
        tracing::warn!(detail = %detail, "Clio deauthorize failed; will retry");
    }

    let mut tx = ctx.pool.begin().await?;
    let still_ours: Option<(bool,)> = sqlx::query_as(
        "SELECT revoke_event_recorded FROM pending_deauthorizations WHERE connection_id = $1 FOR UPDATE",
    )
    .bind(id.0)
    .fetch_optional(&mut *tx)
    .await?;
    if matches!(still_ours, Some((false,))) {
        if outcome.is_final() {
            sqlx::query("DELETE FROM pending_deauthorizations WHERE connection_id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        } else {
            keep_for_retry(&mut tx, &ctx.vault, id, &tokens).await?;
            sqlx::query(
                "UPDATE pending_deauthorizations SET revoke_event_recorded = true, attempts = 1, last_error = $2 \
                 WHERE connection_id = $1",
            )
            .bind(id.0)
            .bind(&detail)
            .execute(&mut *tx)
            .await?;
        }
        let confirmed_at = outcome.is_final().then_some(answered_at);
        let event = revoked_event(
            &connection,
            actor,
            reason,
            now,
            (outcome, &detail),
            confirmed_at,
            1,
        );
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    Ok(Revocation {
        connection: id,
        outcome,
        detail,
        revoked_at: now,
    })
}

/// Revokes many connections at once (bounded concurrency); every one is attempted, and
/// each one's outcome (or error) is returned, in connection order.
async fn revoke_each(
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

pub struct OffboardRequest {
    pub principal: Principal,
    pub tenant: Option<Tenant>,
    pub reason: String,
    /// When the person left; `None` is "now". Checked against the clock by [`offboard`].
    pub departed_at: Option<DateTime<Utc>>,
}

/// How far ahead of the service's clock a departure may be (clock skew between callers).
const DEPARTURE_SKEW: Duration = Duration::minutes(1);
/// How long ago a departure may be: older is a typo (a wrong year), not an offboarding.
const DEPARTURE_MAX_AGE: Duration = Duration::days(365);

/// The departure time, checked against `now`.
fn departure(
    requested: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AuthError> {
    let Some(at) = requested else {
        return Ok(now);
    };
    if at > now + DEPARTURE_SKEW {
        return Err(AuthError::invalid(
            "departed_at",
            format!("{} is in the future", at.to_rfc3339()),
        ));
    }
    if at < now - DEPARTURE_MAX_AGE {
        return Err(AuthError::invalid(
            "departed_at",
            format!(
                "{} is more than {} days ago",
                at.to_rfc3339(),
                DEPARTURE_MAX_AGE.num_days()
            ),
        ));
    }
    Ok(at.min(now))
}

impl TryFrom<pb::OffboardUserRequest> for OffboardRequest {
    type Error = AuthError;

    fn try_from(request: pb::OffboardUserRequest) -> Result<Self, AuthError> {
        Ok(OffboardRequest {
            principal: Principal::parse("principal", &request.principal)?,
            tenant: match request.tenant.as_str() {
                "" => None,
                raw => Some(Tenant::parse("tenant", raw)?),
            },
            reason: required_text("reason", &request.reason, 2_000)?,
            departed_at: request
                .departed_at
                .map(|t| {
                    proto::time::date_time(&t)
                        .ok_or_else(|| AuthError::invalid("departed_at", "not a valid time"))
                })
                .transpose()?,
        })
    }
}

pub struct Offboarded {
    pub results: Vec<Revocation>,
    /// Connections whose revocation failed here, with the error (the run was partial).
    pub failures: Vec<(ConnectionId, String)>,
    pub departed_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
}

/// Revokes every live connection of a person, across apps and regions, and records the
/// offboarding (one USER_OFFBOARDED per tenant involved) with each connection's outcome,
/// also when some revocations failed here: a partial run is recorded as such, and the
/// offboarding report keeps it open until Clio confirmed every connection.
#[tracing::instrument(skip_all, fields(actor = %caller.name))]
pub async fn offboard(
    ctx: &Context,
    caller: &Caller,
    request: OffboardRequest,
) -> Result<Offboarded, AuthError> {
    let started_at = ctx.now();
    let departed_at = departure(request.departed_at, started_at)?;
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT connection_id, tenant FROM connections WHERE principal = $1 AND ($2::text IS NULL OR tenant = $2) \
         AND status <> 'revoked' ORDER BY connection_id",
    )
    .bind(&request.principal.0)
    .bind(request.tenant.as_ref().map(|t| t.0.clone()))
    .fetch_all(&ctx.pool)
    .await?;
    let mut tenants: Vec<String> = rows.iter().map(|(_, t)| t.clone()).collect();
    tenants.sort();
    tenants.dedup();
    if tenants.is_empty() {
        tenants.push(
            request
                .tenant
                .as_ref()
                .map_or_else(|| ctx.config.audit.platform_tenant.clone(), |t| t.0.clone()),
        );
    }
    let ids = rows.iter().map(|(id, _)| ConnectionId(*id)).collect();
    let outcomes = revoke_each(ctx, &caller.name, ids, &request.reason).await;
    let completed_at = ctx.now();
    let mut results = Vec::with_capacity(outcomes.len());
    let mut failures = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Ok(revocation) => results.push(revocation),
            Err(error) => {
                tracing::warn!(connection_id = %id, %error, "revocation failed during offboarding");
                failures.push((id, error.to_string()));
            }
        }
    }
    let mut tx = ctx.pool.begin().await?;
    for tenant in &tenants {
        let of_tenant = |id: &ConnectionId| rows.iter().any(|(row, t)| *row == id.0 && t == tenant);
        let in_tenant: Vec<&Revocation> = results
            .iter()
            .filter(|r| of_tenant(&r.connection))
            .collect();
        let failed_here: Vec<&(ConnectionId, String)> =
            failures.iter().filter(|(id, _)| of_tenant(id)).collect();
        let count = |o: ClioOutcome| in_tenant.iter().filter(|r| r.outcome == o).count();
        let mut connections: Vec<serde_json::Value> = in_tenant
            .iter()
            .map(|r| {
                serde_json::json!({
                    "connection_id": r.connection.to_string(),
                    "clio_outcome": r.outcome.as_str(),
                    "detail": r.detail,
                    "revoked_at": r.revoked_at.to_rfc3339(),
                })
            })
            .collect();
        connections.extend(failed_here.iter().map(|(id, error)| {
            serde_json::json!({
                "connection_id": id.to_string(),
                "clio_outcome": "error",
                "detail": error,
            })
        }));
        let event = EventBuilder::new(
            EventKind::UserOffboarded,
            tenant,
            service_actor(&caller.name),
            subject_of(subject::Kind::Person, &request.principal.0),
            started_at,
        )
        .refs(EventRefs {
            principal: request.principal.0.clone(),
            ..EventRefs::default()
        })
        .reason(&request.reason)
        .payload(serde_json::json!({
            "connections_revoked": in_tenant.len(),
            "connection_ids": in_tenant.iter().map(|r| r.connection.to_string()).collect::<Vec<_>>(),
            "connections": connections,
            "partial": !failed_here.is_empty(),
            "departed_at": departed_at.to_rfc3339(),
            "clio_outcomes": {
                "revoked": count(ClioOutcome::Revoked),
                "already_invalid": count(ClioOutcome::AlreadyInvalid),
                "failed_retrying": count(ClioOutcome::FailedRetrying),
                "nothing_to_revoke": count(ClioOutcome::NothingToRevoke),
                "error": failed_here.len(),
            },
            "started_at": started_at.to_rfc3339(),
            "completed_at": completed_at.to_rfc3339(),
        }))
        .build();
        audit_outbox::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(
        connections = results.len(),
        failed = failures.len(),
        "person offboarded"
    );
    Ok(Offboarded {
        results,
        failures,
        departed_at,
        started_at,
        completed_at,
    })
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
    let app = apps::load(&mut tx, id, true).await?;
    if app.status != AppStatus::Revoked {
        sqlx::query(
            "UPDATE app_registrations SET status = 'revoked', revoked_by = $2, revoked_at = $3, revocation_reason = $4 \
             WHERE app_id = $1",
        )
        .bind(id.0)
        .bind(&caller.name)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
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
    let ids: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "SELECT connection_id FROM connections WHERE app_id = $1 AND status <> 'revoked' ORDER BY connection_id",
    )
    .bind(id.0)
    .fetch_all(&ctx.pool)
    .await?;
    revoke_all(
        ctx,
        &caller.name,
        ids.into_iter().map(|(id,)| ConnectionId(id)).collect(),
        reason,
    )
    .await
}
