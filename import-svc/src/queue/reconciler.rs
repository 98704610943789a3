//! The reconciler: no job is left queued or running with nothing working on it.
//!
//! A job's message can be lost outside import-svc's view: an operator purges a queue, a
//! policy drops it, a broker loses an unreplicated queue. Periodically the reconciler looks
//! for non-final jobs untouched for `importer.reconcile_after_secs` that no consumer holds
//! (the advisory lock a worker takes on its job) and that do not wait in a retry tier. A
//! queued job is only taken as lost when the jobs queue has no message ready (it may
//! simply be waiting behind a backlog). Such a job is published again — harmless even if
//! its message was not lost after all, since a job id runs once — and after
//! `importer.reconcile_max_republish` tries it is dead-lettered with the reason, so it
//! still ends visibly.

use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use proto::queue::{JOB_ROUTING_KEY, content_type, header};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::publisher::{Outgoing, Publisher};
use super::topology::Topology;
use crate::audit::{Auditor, JobContext, RecordError};
use crate::config::ImporterConfig;
use crate::events::{EventKind, Events};
use crate::job::store::{self, JobStatus, StaleJob};
use crate::metrics::ImportMetrics;

/// Jobs looked at in one round.
const BATCH: i64 = 100;

pub struct Reconciler {
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    pub events: Arc<Events>,
    pub audit: Auditor,
    pub config: ImporterConfig,
    pub metrics: ImportMetrics,
}

impl Reconciler {
    pub async fn run(self, stop: CancellationToken) {
        let mut interval =
            tokio::time::interval(Duration::from_millis(self.config.reconcile_interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = interval.tick() => {}
            }
            if let Err(error) = self.round().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "job reconciliation round failed"
                );
            }
        }
    }

    /// One pass over the stale jobs. Returns how many it resolved.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let stale = store::stale_jobs(&self.pool, self.config.reconcile_after_secs, BATCH).await?;
        if stale.is_empty() {
            return Ok(0);
        }
        // Unknown depth (no session): skip the round rather than guess.
        let backlog = self
            .publisher
            .ready_count(&self.topology.names.jobs_queue)
            .await?;
        let mut resolved = 0;
        for job in stale {
            if job.status == "queued" && backlog > 0 {
                continue;
            }
            if store::is_worked_on(&self.pool, job.job_id).await? {
                continue;
            }
            self.resolve(&job).await?;
            resolved += 1;
        }
        Ok(resolved)
    }

    async fn resolve(&self, job: &StaleJob) -> anyhow::Result<()> {
        let limit = i32::try_from(self.config.reconcile_max_republish).unwrap_or(i32::MAX);
        if job.republished >= limit {
            let reason = format!(
                "lost: the job's message was found nowhere after {} re-publications \
                 (importer.reconcile_max_republish)",
                job.republished
            );
            tracing::error!(job_id = %job.job_id, %reason, "dead-lettering a lost job");
            if self.dead_letter(job.job_id, &reason).await? {
                self.events
                    .job(EventKind::DeadLettered, job.job_id, &self.pool)
                    .await;
            }
            return Ok(());
        }
        let Some(wire) = store::stored_job(&self.pool, job.job_id).await? else {
            return Ok(());
        };
        let mut headers = FieldTable::default();
        headers.insert(
            header::REPUBLISHED_BY.into(),
            AMQPValue::LongString(LongString::from(header::IMPORT_SVC)),
        );
        let message_id = job.job_id.to_string();
        self.publisher
            .publish(Outgoing {
                exchange: &self.topology.names.jobs_exchange,
                routing_key: JOB_ROUTING_KEY,
                body: &prost::Message::encode_to_vec(&wire),
                content_type: content_type::PROTOBUF,
                message_id: Some(&message_id),
                headers,
                mandatory: true,
            })
            .await?;
        store::mark_republished(&self.pool, job.job_id).await?;
        tracing::warn!(job_id = %job.job_id, status = %job.status, "job had no message anywhere; published it again");
        Ok(())
    }

    /// Ends the job as dead-lettered with its audit event; false if it had ended already.
    async fn dead_letter(&self, job_id: Uuid, reason: &str) -> Result<bool, RecordError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = store::get(&mut *tx, job_id).await? else {
            return Ok(false);
        };
        let ended =
            store::record_dead_lettered(&mut *tx, job_id, &row.connection_id, reason).await?;
        if ended {
            self.audit
                .enqueue(
                    &mut tx,
                    &JobContext::of_row(&row),
                    proto::common::v1::EventKind::ImportDeadLettered,
                    reason,
                    serde_json::json!({ "dead_lettered_by": "reconciler" }),
                )
                .await?;
        }
        tx.commit().await?;
        self.audit.committed();
        if ended {
            self.metrics.job_ended(JobStatus::DeadLettered);
        }
        Ok(ended)
    }
}
