//! Writing approved suggestions to Clio, exactly once, and cancelling what a revocation
//! leaves behind.
//!
//! A write holds the suggestion (`write_claimed_until`, database time, longer than any
//! Clio call it makes), so two writers (the approval's own call and the background
//! pass, or two replicas) never write the same one at once. Each attempt first asks Clio
//! for a time entry linked to the calendar entry: an earlier attempt Clio did not answer
//! (a timeout, a dropped connection, a crash between Clio's answer and our commit) may have
//! created it, and then it is recorded, not created again. Only when there is none is the
//! entry created. A refusal by Clio (a 4xx, say a validation error) ends the suggestion as
//! `failed` with Clio's message, never retried; Clio or auth-svc not answering leaves it
//! approved for the next pass.
//!
//! Revocation wins: a write whose lease auth-svc refuses (revoked, offboarded, needs
//! reconnecting) cancels the suggestion, and a periodic sweep cancels the open suggestions
//! of every connection auth-svc says is revoked.

use std::time::Duration;

use clio_api::ClioError;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::clio::ClioCalls;
use super::detect::WRITE_SCOPE;
use super::events;
use super::store::{self, Status, SuggestionRow};
use crate::audit::Auditor;
use crate::leases::{Lease, LeaseError, Leases};

/// Approved suggestions one background pass takes on.
const BATCH: i64 = 50;

#[derive(Clone)]
pub struct Writer {
    pub pool: PgPool,
    pub leases: Leases,
    pub clio: ClioCalls,
    pub audit: Auditor,
    /// How long a writer holds a suggestion: longer than the Clio calls of one attempt.
    pub hold: Duration,
    /// How long after an unanswered attempt the next may start.
    pub retry_delay: Duration,
    /// How often the background pass runs.
    pub interval: Duration,
    /// How often the pass also asks auth-svc about every connection with open suggestions
    /// (one call each), to cancel those of revoked connections.
    pub revocation_check: Duration,
}

/// Why an attempt stopped short of an outcome.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot record the audit event: {0}")]
    Audit(#[from] crate::audit::RecordError),
}

/// How one attempt ended.
enum Attempt {
    Written {
        activity_id: i64,
        found_existing: bool,
    },
    /// Clio refused the entry for good: its message.
    Failed(String),
    /// The connection can no longer be used: why.
    Cancelled(String),
    /// Nobody answered; the next attempt looks for the entry first.
    Later(String),
}

impl Writer {
    /// Writes the approved suggestion unless another writer holds it; the suggestion as it
    /// is afterwards (`None`: not approved, or held elsewhere).
    pub async fn write(&self, suggestion_id: Uuid) -> Result<Option<SuggestionRow>, WriteError> {
        let Some(row) = store::claim(&self.pool, suggestion_id, self.hold).await? else {
            return Ok(None);
        };
        self.write_claimed(&row).await
    }

    /// Writes a suggestion this writer already holds: `row` as [`store::claim`] returned
    /// it. The approval claims in its own transaction, so that the background pass cannot
    /// take the write between the approval's commit and its call, and the person
    /// approving is answered with the outcome.
    pub async fn write_claimed(
        &self,
        row: &SuggestionRow,
    ) -> Result<Option<SuggestionRow>, WriteError> {
        let attempt = self.attempt(row).await;
        self.settle(row, attempt).await
    }

    async fn attempt(&self, row: &SuggestionRow) -> Attempt {
        let purpose = format!("billing suggestion {}: write", row.suggestion_id);
        let mut refreshed = false;
        loop {
            let lease = match self
                .leases
                .lease(&row.connection_id, &[WRITE_SCOPE], &purpose, refreshed)
                .await
            {
                Ok(lease) => lease,
                Err(LeaseError::Unusable(why) | LeaseError::Refused(why)) => {
                    return Attempt::Cancelled(why);
                }
                Err(LeaseError::Unavailable(why)) => return Attempt::Later(why),
            };
            match self.write_once(row, &lease).await {
                Err(ClioError::InvalidToken { .. }) if !refreshed => refreshed = true,
                Err(ClioError::InvalidToken { description }) => {
                    return Attempt::Cancelled(format!(
                        "Clio refused the connection's token after a refresh: {description}"
                    ));
                }
                Err(error) if error.is_retryable() => return Attempt::Later(error.to_string()),
                Err(ClioError::Rejected { status, message }) => {
                    return Attempt::Failed(format!(
                        "Clio refused the time entry ({status}): {message}"
                    ));
                }
                Err(ClioError::Forbidden { message }) => {
                    return Attempt::Failed(format!(
                        "Clio refused the time entry (403): {message}"
                    ));
                }
                Err(other) => return Attempt::Later(other.to_string()),
                Ok(done) => return done,
            }
        }
    }

    /// Looks for the entry, and creates it when there is none.
    async fn write_once(&self, row: &SuggestionRow, lease: &Lease) -> Result<Attempt, ClioError> {
        let linked = self
            .clio
            .linked_activity(lease, &row.connection_id, &row.calendar_entry_id)
            .await?;
        if let Some(activity_id) = linked.time_entry {
            return Ok(Attempt::Written {
                activity_id,
                found_existing: true,
            });
        }
        let record = json!({
            "type": "TimeEntry",
            "date": row.entry_date.to_string(),
            "quantity": row.quantity_secs,
            "matter": {"id": row.matter_id},
            "user": {"id": row.user_id},
            "note": row.description,
            "calendar_entry": {"id": row.calendar_entry_id},
        });
        let activity_id = self
            .clio
            .create_time_entry(lease, &row.connection_id, &record)
            .await?;
        Ok(Attempt::Written {
            activity_id,
            found_existing: false,
        })
    }

    async fn settle(
        &self,
        row: &SuggestionRow,
        attempt: Attempt,
    ) -> Result<Option<SuggestionRow>, WriteError> {
        let id = row.suggestion_id;
        match attempt {
            Attempt::Written {
                activity_id,
                found_existing,
            } => {
                let mut tx = self.pool.begin().await?;
                let Some(written) = store::written(&mut *tx, id, activity_id).await? else {
                    return Ok(store::get(&self.pool, id).await?);
                };
                self.audit
                    .enqueue_event(
                        &mut tx,
                        events::performed(&written, activity_id, found_existing),
                    )
                    .await?;
                tx.commit().await?;
                self.audit.committed();
                tracing::info!(suggestion_id = %id, activity_id, found_existing, "time entry written to Clio");
                Ok(Some(written))
            }
            Attempt::Failed(why) => {
                tracing::warn!(suggestion_id = %id, %why, "Clio refused the time entry");
                Ok(store::end_unwritten(&self.pool, id, Status::Failed, &why).await?)
            }
            Attempt::Cancelled(why) => {
                tracing::warn!(suggestion_id = %id, %why, "suggestion cancelled: its connection cannot be used");
                Ok(store::end_unwritten(&self.pool, id, Status::Cancelled, &why).await?)
            }
            Attempt::Later(why) => {
                tracing::warn!(suggestion_id = %id, %why, "time entry not written yet; will try again");
                store::retry_after(&self.pool, id, self.retry_delay, &why).await?;
                Ok(store::get(&self.pool, id).await?)
            }
        }
    }

    /// Cancels the open suggestions of every connection auth-svc reports revoked.
    pub async fn cancel_revoked(&self) -> Result<(), WriteError> {
        for connection_id in store::open_connections(&self.pool).await? {
            match self.leases.connection(&connection_id).await {
                Ok(info) if info.usable.is_ok() => {}
                Ok(info) if info.revoked => {
                    let why = info.usable.err().unwrap_or_default();
                    let cancelled = store::cancel_open(&self.pool, &connection_id, &why).await?;
                    if !cancelled.is_empty() {
                        tracing::info!(%connection_id, cancelled = cancelled.len(), "open suggestions of a revoked connection cancelled");
                    }
                }
                // Needs reconnecting: its owner may still reconnect; writes wait.
                Ok(_) => {}
                Err(LeaseError::Refused(why)) => {
                    store::cancel_open(&self.pool, &connection_id, &why).await?;
                }
                Err(error) => {
                    tracing::warn!(%connection_id, %error, "cannot check a connection with open suggestions");
                }
            }
        }
        Ok(())
    }

    /// Writes the approved suggestions no writer holds.
    pub async fn write_unwritten(&self) -> Result<(), WriteError> {
        for id in store::unwritten(&self.pool, BATCH).await? {
            self.write(id).await?;
        }
        Ok(())
    }

    /// Every `interval` until shutdown: writes what is left unwritten, and every
    /// `revocation_check` first cancels what revoked connections left open.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut checked: Option<tokio::time::Instant> = None;
        loop {
            if checked.is_none_or(|at| at.elapsed() >= self.revocation_check) {
                checked = Some(tokio::time::Instant::now());
                if let Err(error) = self.cancel_revoked().await {
                    tracing::warn!(%error, "revocation check of open suggestions failed; will retry");
                }
            }
            if let Err(error) = self.write_unwritten().await {
                tracing::warn!(%error, "writing approved suggestions failed; will retry");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
