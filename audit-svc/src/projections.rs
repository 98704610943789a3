//! The compliance projections as a whole: rebuilt from the log when dropped or when the
//! projection code changed (see migration 0004 for how each event kind is applied).

use chrono::Utc;
use sqlx::PgPool;

use crate::error::AuditError;

/// Bumped when `audit_project` changes meaning; a service seeing an older version in the
/// database rebuilds the projections at start-up.
pub const PROJECTION_VERSION: i32 = 1;

/// Empties every projection and replays the whole log through `audit_project`, in one
/// transaction. Its TRUNCATE is the barrier against concurrent appends: an append that
/// already projected commits first (and its events are replayed), one that has not yet
/// waits on the projection tables and projects its own events after the rebuild commits.
pub async fn rebuild(pool: &PgPool) -> Result<(), AuditError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT audit_rebuild_projections()")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO projection_state (id, version, rebuilt_at) VALUES (true, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, rebuilt_at = EXCLUDED.rebuilt_at",
    )
    .bind(PROJECTION_VERSION)
    .bind(Utc::now())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Rebuilds unless the projections were built by this version of the code.
pub async fn ensure_current(pool: &PgPool) -> Result<(), AuditError> {
    let version: Option<i32> = sqlx::query_scalar("SELECT version FROM projection_state")
        .fetch_optional(pool)
        .await?;
    if version != Some(PROJECTION_VERSION) {
        tracing::info!(
            found = ?version,
            wanted = PROJECTION_VERSION,
            "rebuilding compliance projections from the log"
        );
        rebuild(pool).await?;
    }
    Ok(())
}
