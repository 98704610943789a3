//! Offboarding a person: every live connection they hold, across apps and regions, is
//! revoked (see [`crate::revocation`]), and the offboarding is recorded once per tenant
//! involved with each connection's outcome.

use chrono::{DateTime, Duration, Utc};
use proto::auth::v1 as pb;
use proto::common::v1::{AuditEvent, EventKind, EventRefs, subject};
use service_runtime::Caller;

use crate::audit_events::{EventBuilder, service_actor, subject_of};
use crate::context::Context;
use crate::domain::{ConnectionId, Principal, Tenant, required_text};
use crate::error::AuthError;
use crate::revocation::{ClioOutcome, Revocation, revoke_each};
use crate::store;

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
    let tenant = request.tenant.as_ref().map(|t| t.0.as_str());
    let live =
        store::connections::live_of_principal(&ctx.pool, &request.principal.0, tenant).await?;
    let ids = live.iter().map(|(id, _)| *id).collect();
    let outcomes = revoke_each(ctx, &caller.name, ids, &request.reason).await;
    let completed_at = ctx.now();
    let mut done = Offboarded {
        results: Vec::with_capacity(outcomes.len()),
        failures: Vec::new(),
        departed_at,
        started_at,
        completed_at,
    };
    for (id, outcome) in outcomes {
        match outcome {
            Ok(revocation) => done.results.push(revocation),
            Err(error) => {
                tracing::warn!(connection_id = %id, %error, "revocation failed during offboarding");
                done.failures.push((id, error.to_string()));
            }
        }
    }
    let report = Report {
        caller,
        request: &request,
        done: &done,
        live: &live,
    };
    let mut tx = ctx.pool.begin().await?;
    for tenant in tenants(ctx, &request, &live) {
        audit_outbox::enqueue(&mut tx, report.event(&tenant)).await?;
    }
    tx.commit().await?;
    ctx.events_committed();
    tracing::info!(
        connections = done.results.len(),
        failed = done.failures.len(),
        "person offboarded"
    );
    Ok(done)
}

/// The tenants the person's live connections are in; the requested tenant (or the
/// platform's) when there are none, so the offboarding is on record anyway.
fn tenants(
    ctx: &Context,
    request: &OffboardRequest,
    live: &[(ConnectionId, String)],
) -> Vec<String> {
    let mut tenants: Vec<String> = live.iter().map(|(_, t)| t.clone()).collect();
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
    tenants
}

/// What an offboarding did, for its events.
struct Report<'a> {
    caller: &'a Caller,
    request: &'a OffboardRequest,
    done: &'a Offboarded,
    /// The live connections it set out to revoke, with their tenants.
    live: &'a [(ConnectionId, String)],
}

impl Report<'_> {
    /// The USER_OFFBOARDED event of one tenant: its connections and their outcomes.
    fn event(&self, tenant: &str) -> AuditEvent {
        let of_tenant =
            |id: &ConnectionId| self.live.iter().any(|(row, t)| row == id && t == tenant);
        let in_tenant: Vec<&Revocation> = self
            .done
            .results
            .iter()
            .filter(|r| of_tenant(&r.connection))
            .collect();
        let failed_here: Vec<&(ConnectionId, String)> = self
            .done
            .failures
            .iter()
            .filter(|(id, _)| of_tenant(id))
            .collect();
        let count = |o: ClioOutcome| in_tenant.iter().filter(|r| r.outcome == o).count();
        let principal = &self.request.principal.0;
        EventBuilder::new(
            EventKind::UserOffboarded,
            tenant,
            service_actor(&self.caller.name),
            subject_of(subject::Kind::Person, principal),
            self.done.started_at,
        )
        .refs(EventRefs {
            principal: principal.clone(),
            ..EventRefs::default()
        })
        .reason(&self.request.reason)
        .payload(serde_json::json!({
            "connections_revoked": in_tenant.len(),
            "connection_ids": in_tenant.iter().map(|r| r.connection.to_string()).collect::<Vec<_>>(),
            "connections": connection_outcomes(&in_tenant, &failed_here),
            "partial": !failed_here.is_empty(),
            "departed_at": self.done.departed_at.to_rfc3339(),
            "clio_outcomes": {
                "revoked": count(ClioOutcome::Revoked),
                "already_invalid": count(ClioOutcome::AlreadyInvalid),
                "failed_retrying": count(ClioOutcome::FailedRetrying),
                "nothing_to_revoke": count(ClioOutcome::NothingToRevoke),
                "error": failed_here.len(),
            },
            "started_at": self.done.started_at.to_rfc3339(),
            "completed_at": self.done.completed_at.to_rfc3339(),
        }))
        .build()
    }
}

/// Each connection's outcome, the revoked ones first, then those that failed here.
fn connection_outcomes(
    revoked: &[&Revocation],
    failed: &[&(ConnectionId, String)],
) -> Vec<serde_json::Value> {
    let revoked = revoked.iter().map(|r| {
        serde_json::json!({
            "connection_id": r.connection.to_string(),
            "clio_outcome": r.outcome.as_str(),
            "detail": r.detail,
            "revoked_at": r.revoked_at.to_rfc3339(),
        })
    });
    let failed = failed.iter().map(|(id, error)| {
        serde_json::json!({
            "connection_id": id.to_string(),
            "clio_outcome": "error",
            "detail": error,
        })
    });
    revoked.chain(failed).collect()
}
