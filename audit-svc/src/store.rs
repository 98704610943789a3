//! The database side of the event log: the pool the service works through, and reading
//! stored rows back into [`EventRecord`]s.
//!
//! Every pooled connection runs `SET ROLE audit_appender` (migration 0002), so even when
//! the configured login is a superuser the service itself holds only SELECT and INSERT on
//! the log. The append-only trigger covers the case where someone with more rights edits it.
//!
//! Two logins (migration 0007, README "Database logins"): `database.migration_url` owns
//! the schema and migrates it; `service.database.url` owns nothing, so once it works as
//! `audit_appender` even `RESET ROLE` gives it nothing back. [`open`] refuses to start
//! when a separate migration login is configured but the service login could still act as
//! the owner.

use std::time::Duration;

use secrecy::ExposeSecret;
use service_runtime::config::DatabaseConfig;
use service_runtime::database::connect_and_migrate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Executor, PgPool, Row};
use uuid::Uuid;

use crate::canonical::canonical_text;
use crate::config::Config;
use crate::error::AuditError;
use crate::event::{EventBody, EventRecord, Refs};

/// The columns [`decode_event`] reads, in its order.
pub const EVENT_COLUMNS: &str = "tenant, sequence, event_id, kind, actor_kind, actor_id, \
     subject_kind, subject_id, connection_id, app_id, principal, clio_user_id, \
     clio_account_id, job_id, region, scopes, risk_tier, reason, source, occurred_at, \
     recorded_at, payload::text, prev_hash, hash, writer";

/// Runs the migrations with the configured login and returns that login's pool (for
/// schema work `audit_appender` may not do, such as recreating a dropped projection).
pub async fn migrate(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    Ok(connect_and_migrate(config, &migrator()).await?)
}

/// What migration 0002 runs to create `audit_appender`, and what [`migrator`] runs instead.
const CREATE_APPENDER: &str = "    CREATE ROLE audit_appender NOLOGIN;\n";
const CREATE_MISSING_APPENDER: &str = "    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_appender') THEN\n        CREATE ROLE audit_appender NOLOGIN;\n    END IF;\n";

/// The embedded migrations ([`crate::MIGRATOR`]) as they are run, with one change.
/// Migration 0002 creates `audit_appender` in a block that tolerates the role existing,
/// but PostgreSQL checks CREATEROLE before it looks for the role, so an owner login without
/// CREATEROLE (separate logins, the role created once by an administrator) could not run
/// it. Here it creates the role only when missing. The checksum stays the file's: the
/// effect is the same wherever 0002 already ran or the login may create roles, and
/// applied migrations are never edited.
pub fn migrator() -> sqlx::migrate::Migrator {
    let migrations = crate::MIGRATOR
        .iter()
        .map(|migration| {
            let mut migration = migration.clone();
            if migration.version == 2 {
                migration.sql = migration
                    .sql
                    .replace(CREATE_APPENDER, CREATE_MISSING_APPENDER)
                    .into();
            }
            migration
        })
        .collect::<Vec<_>>();
    sqlx::migrate::Migrator {
        migrations: migrations.into(),
        ignore_missing: crate::MIGRATOR.ignore_missing,
        locking: crate::MIGRATOR.locking,
        no_tx: crate::MIGRATOR.no_tx,
    }
}

/// Runs the migrations and brings the projections up to date with the configured login,
/// then opens the pool the service uses, whose connections work as `audit_appender`.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    migrate_and_heal(config).await?;
    service_pool(config)
}

/// The login that runs the migrations: `database.migration_url` when set, otherwise the
/// service's own (with the same pool settings).
pub fn migration_login(config: &Config) -> DatabaseConfig {
    let mut login = config.service.database.clone();
    if let Some(url) = &config.database.migration_url {
        login.url = url.clone();
    }
    login
}

/// Migrates with `login` and rebuilds the projections if they cannot be trusted (what
/// `audit-svc migrate` and a migrating start-up do).
pub async fn migrate_and_heal(
    login: &DatabaseConfig,
) -> anyhow::Result<Option<(crate::projections::Stale, crate::projections::Rebuilt)>> {
    let migrating = migrate(login).await?;
    let ensured = crate::projections::ensure_current(&migrating).await;
    migrating.close().await;
    Ok(ensured?)
}

/// Prepares the database for the service and opens the service's pool: migrates with the
/// migration login (unless `database.migrate_at_start` is off: then checks the schema is
/// current and heals the projections as `audit_appender`), then checks what the service
/// login may do.
pub async fn open(config: &Config) -> anyhow::Result<PgPool> {
    if config.database.migrate_at_start {
        migrate_and_heal(&migration_login(config)).await?;
    }
    let pool = service_pool(&config.service.database)?;
    if !config.database.migrate_at_start {
        check_schema(&pool).await?;
        crate::projections::ensure_current(&pool).await?;
    }
    check_login(&pool, config.database.migration_url.is_some()).await?;
    Ok(pool)
}

/// Refuses a schema older than this build's migrations (`audit-svc migrate` did not run).
async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    let wanted = crate::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the schema version ({e}): run `audit-svc migrate` with the \
                     migration login first (database.migrate_at_start is false)"
                )
            })?;
    if applied < wanted {
        anyhow::bail!(
            "the database schema is at migration {applied}, this build needs {wanted}: run \
             `audit-svc migrate` with the migration login first (database.migrate_at_start is false)"
        );
    }
    Ok(())
}

/// What the service login could do beyond `audit_appender`.
async fn check_login(pool: &PgPool, separated: bool) -> anyhow::Result<()> {
    // Objects of this database's schema the login owns or may act as the owner of
    // (MEMBER: directly, by inheritance, or through SET ROLE).
    let (login, superuser, owned): (String, bool, i64) = sqlx::query_as(
        "SELECT session_user::text, \
                (SELECT rolsuper FROM pg_roles WHERE rolname = session_user), \
                (SELECT count(*) FROM pg_class \
                  WHERE relnamespace = 'public'::regnamespace \
                    AND pg_has_role(session_user, relowner, 'MEMBER')) \
              + (SELECT count(*) FROM pg_proc \
                  WHERE pronamespace = 'public'::regnamespace \
                    AND pg_has_role(session_user, proowner, 'MEMBER'))",
    )
    .fetch_one(pool)
    .await?;
    if !superuser && owned == 0 {
        return Ok(());
    }
    let what = if superuser {
        "is a superuser".to_owned()
    } else {
        format!("may act as the owner of {owned} table(s) and function(s)")
    };
    if separated {
        anyhow::bail!(
            "service.database.url logs in as {login:?}, which {what}: with a separate \
             database.migration_url the service login must own nothing (README, \
             \"Database logins\")"
        );
    }
    tracing::warn!(
        login,
        "the service's database login {what}, so only the append-only trigger keeps it from \
         changing the log; production sets database.migration_url to the owner login and \
         service.database.url to a login that owns nothing"
    );
    Ok(())
}

/// The pool the service works through: every connection runs as `audit_appender`.
pub fn service_pool(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .url
        .expose_secret()
        .parse()
        .map_err(|e| anyhow::anyhow!("database url {}: {e}", config.redacted_url()))?;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET ROLE audit_appender").await?;
                Ok(())
            })
        })
        .connect_lazy_with(options);
    Ok(pool)
}

fn internal(what: &str, error: impl std::fmt::Display) -> AuditError {
    AuditError::Internal(format!("stored event {what}: {error}"))
}

/// A row selected with [`EVENT_COLUMNS`], columns read by position. (`Verify` reads the
/// same columns without building records: [`crate::stored_chain`].)
pub fn decode_event(row: &PgRow) -> Result<EventRecord, AuditError> {
    let sequence: i64 = row.try_get(1)?;
    let scopes: Vec<String> = row.try_get(15)?;
    let payload: String = row.try_get(21)?;
    let event_id: Uuid = row.try_get(2)?;
    Ok(EventRecord {
        body: EventBody {
            event_id,
            tenant: row.try_get(0)?,
            kind: row.try_get(3)?,
            actor_kind: row.try_get(4)?,
            actor_id: row.try_get(5)?,
            subject_kind: row.try_get(6)?,
            subject_id: row.try_get(7)?,
            refs: Refs {
                connection_id: row.try_get(8)?,
                app_id: row.try_get(9)?,
                principal: row.try_get(10)?,
                clio_user_id: row.try_get(11)?,
                clio_account_id: row.try_get(12)?,
                job_id: row.try_get(13)?,
                region: row.try_get(14)?,
            },
            scopes,
            risk_tier: row.try_get(16)?,
            reason: row.try_get(17)?,
            source: row.try_get(18)?,
            occurred_at: row.try_get(19)?,
            // jsonb prints its own spacing; the hash covers the canonical form.
            payload: canonical_text(&payload).map_err(|e| internal("payload", e))?,
            writer: row.try_get(24)?,
        },
        sequence: u64::try_from(sequence).map_err(|e| internal("sequence", e))?,
        recorded_at: row.try_get(20)?,
        prev_hash: row.try_get(22)?,
        hash: row.try_get(23)?,
    })
}

/// A wire sequence as the database's bigint.
pub fn db_sequence(field: &str, value: u64) -> Result<i64, AuditError> {
    i64::try_from(value).map_err(|_| AuditError::invalid(field, "too large"))
}
