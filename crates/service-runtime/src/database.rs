//! The service's own Postgres database: pool, creation when missing, embedded migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseConfig;

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot create database {url}: {source}")]
    Create { url: String, source: sqlx::Error },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrations failed on {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Connects (creating the database first if configured to), then runs `migrator`.
///
/// sqlx's migrator holds a Postgres advisory lock while it runs, so replicas starting
/// together apply each migration exactly once.
pub async fn connect_and_migrate(
    config: &DatabaseConfig,
    migrator: &Migrator,
) -> Result<PgPool, DatabaseError> {
    let url = config.url.expose_secret();
    let redacted = config.redacted_url();
    if config.create_if_missing {
        let exists =
            Postgres::database_exists(url)
                .await
                .map_err(|source| DatabaseError::Create {
                    url: redacted.clone(),
                    source,
                })?;
        if !exists {
            // Two replicas may race here; losing the race is fine.
            if let Err(source) = Postgres::create_database(url).await {
                let now_exists = Postgres::database_exists(url).await.unwrap_or(false);
                if !now_exists {
                    return Err(DatabaseError::Create {
                        url: redacted,
                        source,
                    });
                }
            }
        }
    }
    let options: PgConnectOptions = url.parse().map_err(|source| DatabaseError::Connect {
        url: redacted.clone(),
        source,
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .connect_with(options)
        .await
        .map_err(|source| DatabaseError::Connect {
            url: redacted.clone(),
            source,
        })?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| DatabaseError::Migrate {
            url: redacted,
            source,
        })?;
    Ok(pool)
}
