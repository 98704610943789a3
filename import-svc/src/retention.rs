//! Purges imported records past their resource's retention window.
//!
//! Calendar entries default to a short window: the seed's minimal-storage practice is that
//! an assistant reading calendars keeps no permanent copy. The purge deletes rows outright
//! (not a deleted flag), because keeping them is what the setting forbids.

use std::time::Duration;

use service_runtime::clock::SharedClock;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::records;

/// Runs one purge pass; returns the rows deleted per resource.
pub async fn purge_once(
    pool: &PgPool,
    config: &RetentionConfig,
    clock: &SharedClock,
) -> Result<u64, records::RecordError> {
    let mut total = 0;
    for (resource, hours) in &config.hours {
        let hours = i64::try_from(*hours).unwrap_or(i64::MAX);
        let cutoff = clock.now() - chrono::Duration::hours(hours);
        let purged = records::purge_older_than(pool, *resource, cutoff).await?;
        if purged > 0 {
            tracing::info!(%resource, purged, retention_hours = hours, "purged records past retention");
        }
        total += purged;
    }
    Ok(total)
}

/// Purges every `purge_interval_ms` until shutdown.
pub async fn run(
    pool: PgPool,
    config: RetentionConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(error) = purge_once(&pool, &config, &clock).await {
            tracing::warn!(%error, "retention purge failed; will retry");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(config.purge_interval_ms)) => {}
        }
    }
}
