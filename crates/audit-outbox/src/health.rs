//! The outbox's state for operators: `GET /health/audit-outbox` (no credential, counts
//! only) answers `{"status":"ok","pending":0,"oldest_pending_seconds":null,"quarantined":0}`;
//! `status` is `quarantined` while audit-svc has refused events that wait in
//! `audit_outbox_quarantine` for someone to look (the service itself is still healthy, so
//! this is a detail beside gRPC health, not a reason to go NOT_SERVING).

use axum::Json;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use sqlx::PgPool;

/// Where [`health_router`] answers; producers list it as a public path.
pub const HEALTH_PATH: &str = "/health/audit-outbox";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxHealth {
    /// `ok`, or `quarantined` while refused events wait in the quarantine.
    pub status: &'static str,
    /// Events not yet accepted by audit-svc.
    pub pending: i64,
    /// Age of the oldest pending event, in whole seconds.
    pub oldest_pending_seconds: Option<i64>,
    /// Events audit-svc refused as invalid, kept in `audit_outbox_quarantine`.
    pub quarantined: i64,
}

/// The outbox's state now.
pub async fn health(pool: &PgPool) -> Result<OutboxHealth, sqlx::Error> {
    let (pending, oldest_pending_seconds, quarantined): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL), \
                    (SELECT floor(extract(epoch FROM now() - min(enqueued_at)))::bigint \
                       FROM audit_outbox WHERE delivered_at IS NULL), \
                    (SELECT count(*) FROM audit_outbox_quarantine)",
    )
    .fetch_one(pool)
    .await?;
    Ok(OutboxHealth {
        status: if quarantined > 0 { "quarantined" } else { "ok" },
        pending,
        oldest_pending_seconds,
        quarantined,
    })
}

/// `GET` [`HEALTH_PATH`] for the producer's HTTP router (503 while the database is down).
pub fn health_router(pool: PgPool) -> axum::Router {
    axum::Router::new().route(
        HEALTH_PATH,
        get(move || {
            let pool = pool.clone();
            async move {
                match health(&pool).await {
                    Ok(state) => Ok(Json(state)),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the audit outbox's state");
                        Err(StatusCode::SERVICE_UNAVAILABLE)
                    }
                }
            }
        }),
    )
}
