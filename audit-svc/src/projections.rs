//! The compliance projections as a whole: checked at start-up and rebuilt from the log when
//! they cannot be trusted (see migration 0004 for how each event kind is applied, and 0005
//! for the projection tables and how their staleness shows).
//!
//! Both entry points need the rights of the login that runs the migrations, not only
//! `audit_appender`'s: recreating a dropped table needs CREATE on the schema.

use std::fmt;

use chrono::Utc;
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::AuditError;

/// Bumped when `audit_project` changes meaning; a service seeing an older version in the
/// database rebuilds the projections at start-up.
pub const PROJECTION_VERSION: i32 = 1;

/// Serialises checks and rebuilds, so replicas starting together rebuild once: the second
/// finds the projections current when it gets the lock.
const REBUILD_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('audit-svc.projections'))";

/// Why the projections could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// These projection tables did not exist (dropped).
    MissingTables(Vec<String>),
    /// No `projection_state` row: never built, or a projection table was emptied since.
    NeverBuilt,
    /// Built by other projection code.
    Version(i32),
    /// This many tenants' chains end elsewhere than the projections applied.
    BehindLog(i64),
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::MissingTables(tables) => write!(f, "missing tables: {}", tables.join(", ")),
            Stale::NeverBuilt => f.write_str("never built, or a projection table was emptied"),
            Stale::Version(found) => {
                write!(f, "built by version {found}, code is {PROJECTION_VERSION}")
            }
            Stale::BehindLog(tenants) => {
                write!(
                    f,
                    "{tenants} tenant(s) not projected up to their chain head"
                )
            }
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Tables that were missing and were created again (with all the others).
    pub recreated_tables: Vec<String>,
    pub events_replayed: i64,
    pub tenants: i64,
}

/// Recreates missing projection tables, empties the projections and replays the whole log
/// through `audit_project`, in one transaction. The TRUNCATE is the barrier against
/// concurrent appends: an append that already projected commits first (and its events are
/// replayed), one that has not yet waits on the projection tables and projects its own
/// events after the rebuild commits.
pub async fn rebuild(pool: &PgPool) -> Result<Rebuilt, AuditError> {
    let mut tx = pool.begin().await?;
    sqlx::query(REBUILD_LOCK).execute(&mut *tx).await?;
    let missing = missing_tables(&mut tx).await?;
    let rebuilt = rebuild_in(&mut tx, missing).await?;
    tx.commit().await?;
    Ok(rebuilt)
}

/// Rebuilds unless the projections are whole, built by this code and up to the log's
/// heads; says why it rebuilt, if it did.
pub async fn ensure_current(pool: &PgPool) -> Result<Option<(Stale, Rebuilt)>, AuditError> {
    let mut tx = pool.begin().await?;
    sqlx::query(REBUILD_LOCK).execute(&mut *tx).await?;
    let Some(stale) = staleness(&mut tx).await? else {
        tx.commit().await?;
        return Ok(None);
    };
    tracing::info!(reason = %stale, "rebuilding compliance projections from the log");
    let missing = match &stale {
        Stale::MissingTables(tables) => tables.clone(),
        _ => Vec::new(),
    };
    let rebuilt = rebuild_in(&mut tx, missing).await?;
    tx.commit().await?;
    tracing::info!(
        events = rebuilt.events_replayed,
        tenants = rebuilt.tenants,
        "compliance projections rebuilt"
    );
    Ok(Some((stale, rebuilt)))
}

/// The first reason found not to trust the projections, cheapest checks first.
async fn staleness(tx: &mut Transaction<'_, Postgres>) -> Result<Option<Stale>, AuditError> {
    let missing = missing_tables(tx).await?;
    if !missing.is_empty() {
        return Ok(Some(Stale::MissingTables(missing)));
    }
    let version: Option<i32> = sqlx::query_scalar("SELECT version FROM projection_state")
        .fetch_optional(&mut **tx)
        .await?;
    match version {
        None => return Ok(Some(Stale::NeverBuilt)),
        Some(found) if found != PROJECTION_VERSION => return Ok(Some(Stale::Version(found))),
        Some(_) => {}
    }
    let behind = tenants_off_head(tx).await?;
    Ok((behind > 0).then_some(Stale::BehindLog(behind)))
}

/// Tenants whose last event is not the last one the projections applied (or the reverse):
/// events that reached the log without the append path (a restore, a manual import).
async fn tenants_off_head(tx: &mut Transaction<'_, Postgres>) -> Result<i64, AuditError> {
    let count = sqlx::query_scalar(
        // Tenants come from chain_heads (every append keeps its tenant's head there) and
        // each tenant's last sequence from the primary key, read backwards: a few index
        // probes per tenant at start-up instead of a scan of the whole log.
        "SELECT count(*) FROM \
         (SELECT h.tenant, (SELECT max(e.sequence) FROM events AS e WHERE e.tenant = h.tenant) AS last \
          FROM chain_heads AS h) AS log \
         FULL JOIN projection_heads AS p USING (tenant) \
         WHERE p.sequence IS DISTINCT FROM log.last",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(count)
}

async fn missing_tables(tx: &mut Transaction<'_, Postgres>) -> Result<Vec<String>, AuditError> {
    let missing = sqlx::query_scalar("SELECT audit_missing_projection_tables()")
        .fetch_all(&mut **tx)
        .await?;
    Ok(missing)
}

/// The rebuild proper, inside the caller's locked transaction.
async fn rebuild_in(
    tx: &mut Transaction<'_, Postgres>,
    missing: Vec<String>,
) -> Result<Rebuilt, AuditError> {
    if !missing.is_empty() {
        // The same DDL migration 0005 used, so a recreated table is a migrated one.
        sqlx::query("SELECT audit_recreate_projection_tables()")
            .execute(&mut **tx)
            .await?;
    }
    let events_replayed: i64 = sqlx::query_scalar("SELECT audit_rebuild_projections()")
        .fetch_one(&mut **tx)
        .await?;
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_heads")
        .fetch_one(&mut **tx)
        .await?;
    // Written last: the rebuild's own TRUNCATE cleared it (migration 0005's trigger).
    sqlx::query(
        "INSERT INTO projection_state (id, version, rebuilt_at) VALUES (true, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, rebuilt_at = EXCLUDED.rebuilt_at",
    )
    .bind(PROJECTION_VERSION)
    .bind(Utc::now())
    .execute(&mut **tx)
    .await?;
    Ok(Rebuilt {
        recreated_tables: missing,
        events_replayed,
        tenants,
    })
}
