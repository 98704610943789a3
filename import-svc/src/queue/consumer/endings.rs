//! How a delivery ends: the job settled (completed, failed, cancelled) and acked, parked in
//! a retry tier while a dependency is down, handed back on a graceful stop, or
//! dead-lettered with its reason — each recorded before the ack (see the parent module).

use std::time::Duration;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use proto::queue::{JOB_ROUTING_KEY, header, retry_routing_key};

use super::{Consumer, SessionBroken, ack, content_type_of, message_id_of, nack};
use crate::audit::{JobContext, RecordError};
use crate::events::EventKind;
use crate::job::store::{self, JobStatus};
use crate::queue::ledger;
use crate::queue::publisher::Outgoing;
use crate::queue::retry::{self, Plan};

impl Consumer {
    /// Records the job's end and its audit event, publishes its job event, then acks. If
    /// the end cannot be recorded (Postgres down) the message waits in a retry tier.
    pub(super) async fn end(
        &self,
        delivery: &Delivery,
        job: &JobContext,
        status: JobStatus,
        reason: Option<&str>,
        event: EventKind,
    ) -> Result<(), SessionBroken> {
        let Some(job_id) = job.job_id else {
            return ack(delivery).await;
        };
        if let Some(reason) = reason {
            tracing::warn!(%job_id, %reason, "job failed");
        } else {
            tracing::info!(%job_id, status = status.as_str(), "job ended");
        }
        if let Err(error) = self.finish(job, status, reason).await {
            return self
                .retry_later(
                    delivery,
                    job,
                    &format!("cannot record the job's end: {error}"),
                )
                .await;
        }
        self.events.job(event, job_id, &self.pool).await;
        ack(delivery).await
    }

    /// A job that cannot run now: park its message in a retry tier (confirmed), note the
    /// wait on the job, then ack. The delivery limit is never spent on an outage. After
    /// `max_outage` of one outage the job fails with the reason.
    pub(super) async fn retry_later(
        &self,
        delivery: &Delivery,
        job: &JobContext,
        reason: &str,
    ) -> Result<(), SessionBroken> {
        let headers = delivery.properties.headers().as_ref();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let plan = retry::plan(
            retry::RetryState::of(headers),
            now_ms,
            &self.topology.retry_delays_ms,
            self.max_outage,
        );
        let job_id = job.job_id.map(|j| j.to_string()).unwrap_or_default();
        let (delay_ms, state) = match plan {
            Plan::Wait { delay_ms, state } => (delay_ms, state),
            Plan::GiveUp { outage } => {
                let reason = format!(
                    "gave up after a dependency was unavailable for {}s \
                     (importer.max_outage_secs {}): {reason}",
                    outage.as_secs(),
                    self.max_outage.as_secs()
                );
                tracing::warn!(%job_id, %reason, "job failed");
                if let Err(error) = self.finish(job, JobStatus::Failed, Some(&reason)).await {
                    // Down for longer than the whole outage budget: only the broker can
                    // hold the job now (the ledger records it if it is dead-lettered).
                    tracing::error!(%job_id, %error, "cannot record the job's failure; requeueing it");
                    return nack(delivery, true).await;
                }
                if let Some(job_id) = job.job_id {
                    self.events.job(EventKind::Failed, job_id, &self.pool).await;
                }
                return ack(delivery).await;
            }
        };
        tracing::warn!(%job_id, %reason, attempt = state.attempt, delay_ms, "job cannot run now; parking it in a retry queue");
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: &self.topology.names.retry_exchange,
                routing_key: &retry_routing_key(delay_ms),
                body: &delivery.data,
                content_type: &content_type_of(delivery),
                message_id: message_id_of(delivery).as_deref(),
                headers: state.headers(headers, reason),
                mandatory: true,
            })
            .await;
        if let Err(error) = published {
            // The broker is the one failing: handing back is all that is left.
            tracing::warn!(%job_id, %error, "cannot park the job in a retry queue; requeueing it");
            return nack(delivery, true).await;
        }
        if let Some(job_id) = job.job_id
            && let Err(error) = store::schedule_retry(&self.pool, job_id, delay_ms, reason).await
        {
            // The message is parked; the job row catches up when it runs again.
            tracing::debug!(%job_id, %error, "cannot note the retry on the job");
        }
        ack(delivery).await
    }

    /// Parks a job whose connection's turn has not come: it is stored as queued (visible,
    /// and accounted for), a confirmed copy goes to the deferral tier, whose TTL brings it
    /// back to the jobs queue, and only then is the original acked. No retry is counted
    /// and the delivery limit is not spent: waiting for a turn is no failure.
    pub(super) async fn defer(
        &self,
        delivery: &Delivery,
        spec: &crate::job::spec::JobSpec,
    ) -> Result<(), SessionBroken> {
        let headers = delivery.properties.headers().as_ref();
        // Deferred before: its connection is busy with a backlog, so it waits longer and
        // the backlog does not cycle through the broker every few seconds.
        let delay_ms = match retry::deferrals(headers) {
            0 => self.topology.defer_delay_ms,
            _ => self.topology.max_defer_delay_ms,
        };
        if let Err(error) = store::insert_queued(&self.pool, spec).await {
            // Not stored, so not deferred: the retry path waits out the database.
            let job = JobContext::of_spec(spec);
            return self
                .retry_later(delivery, &job, &format!("database unavailable: {error}"))
                .await;
        }
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: &self.topology.names.retry_exchange,
                routing_key: &retry_routing_key(delay_ms),
                body: &delivery.data,
                content_type: &content_type_of(delivery),
                message_id: message_id_of(delivery).as_deref(),
                headers: retry::deferred_headers(headers),
                mandatory: true,
            })
            .await;
        if let Err(error) = published {
            tracing::warn!(job_id = %spec.job_id, %error, "cannot defer the job; requeueing it");
            return nack(delivery, true).await;
        }
        if let Err(error) = store::note_deferred(&self.pool, spec.job_id, delay_ms).await {
            tracing::debug!(job_id = %spec.job_id, %error, "cannot note the deferral on the job");
        }
        self.metrics.job_deferred();
        tracing::debug!(job_id = %spec.job_id, connection_id = %spec.connection_id, delay_ms, "job deferred until its connection's turn");
        ack(delivery).await
    }

    /// Gives a job that was stopped (not failed) back to the queue without spending the
    /// delivery limit: a confirmed copy goes to the jobs exchange and the original is
    /// acked, so rolling restarts never dead-letter a long job. If the copy cannot be
    /// published the original is handed back the ordinary way.
    pub(super) async fn hand_back(&self, delivery: &Delivery) -> Result<(), SessionBroken> {
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: &self.topology.names.jobs_exchange,
                routing_key: JOB_ROUTING_KEY,
                body: &delivery.data,
                content_type: &content_type_of(delivery),
                message_id: message_id_of(delivery).as_deref(),
                headers: delivery.properties.headers().clone().unwrap_or_default(),
                mandatory: true,
            })
            .await;
        match published {
            Ok(()) => ack(delivery).await,
            Err(_) => nack(delivery, true).await,
        }
    }

    /// Accounts for one message of the dead-letter ledger: a dead letter import-svc did
    /// not make itself (delivery limit, TTL, a policy) ends its job as dead-lettered, with
    /// the broker's reason, an audit event and a job event. Never handed back for its
    /// content: only a database failure retries it.
    pub(super) async fn account_dead_letter(
        &self,
        delivery: &Delivery,
    ) -> Result<(), SessionBroken> {
        let Some(dead) = ledger::describe(delivery) else {
            // Rejected by import-svc, which recorded it before acking.
            return ack(delivery).await;
        };
        match self.record_broker_dead_letter(&dead).await {
            Ok(ended) => {
                tracing::warn!(job_id = dead.job_id.map(|j| j.to_string()).unwrap_or_default(), reason = %dead.reason, "the broker dead-lettered a job message");
                if let (Some(job_id), true) = (dead.job_id, ended) {
                    self.events
                        .job(EventKind::DeadLettered, job_id, &self.pool)
                        .await;
                }
                ack(delivery).await
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record a dead letter yet; it stays in the ledger");
                // A database outage: wait a moment so the ledger does not spin.
                tokio::time::sleep(Duration::from_secs(1)).await;
                nack(delivery, true).await
            }
        }
    }

    /// Returns whether the job was ended by this record.
    pub(super) async fn record_broker_dead_letter(
        &self,
        dead: &ledger::DeadLetter,
    ) -> Result<bool, RecordError> {
        let mut tx = self.pool.begin().await?;
        let (job, ended) = match dead.job_id {
            Some(job_id) => {
                let ended = store::record_dead_lettered(
                    &mut *tx,
                    job_id,
                    &dead.connection_id,
                    &dead.reason,
                )
                .await?;
                let job = match store::get(&mut *tx, job_id).await? {
                    Some(row) => JobContext::of_row(&row),
                    None => dead.context(),
                };
                (job, ended)
            }
            None => (dead.context(), true),
        };
        if ended {
            self.audit
                .enqueue(
                    &mut tx,
                    &job,
                    proto::common::v1::EventKind::ImportDeadLettered,
                    &dead.reason,
                    dead.payload(),
                )
                .await?;
        }
        tx.commit().await?;
        self.audit.committed();
        if ended && dead.job_id.is_some() {
            self.metrics.job_ended(JobStatus::DeadLettered);
        }
        Ok(ended)
    }

    /// Ends the job and records its audit event, in one transaction.
    pub(super) async fn finish(
        &self,
        job: &JobContext,
        status: JobStatus,
        reason: Option<&str>,
    ) -> Result<(), RecordError> {
        let Some(job_id) = job.job_id else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        let ended = store::finish(&mut *tx, job_id, status, reason).await?;
        if let Some(row) = &ended {
            self.audit.job_ended(&mut tx, job, row).await?;
        }
        tx.commit().await?;
        self.audit.committed();
        if ended.is_some() {
            self.metrics.job_ended(status);
        }
        Ok(())
    }

    /// Sends the message to the dead-letter queue with its reason (confirmed), then records
    /// the job as dead-lettered (when its id is known) and the audit event in one
    /// transaction, then acks the original. If that record cannot be written the message
    /// is handed back: a second copy in the dead-letter queue is harmless, a refusal with
    /// no audit event is not.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        job: &JobContext,
        reason: &str,
    ) -> Result<(), SessionBroken> {
        let job_id = job.job_id;
        tracing::warn!(job_id = job_id.map(|j| j.to_string()).unwrap_or_default(), %reason, "dead-lettering job message");
        let mut headers = FieldTable::default();
        headers.insert(
            header::REJECTION_REASON.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            header::REJECTED_BY.into(),
            AMQPValue::LongString(LongString::from(header::IMPORT_SVC)),
        );
        headers.insert(
            header::ORIGINAL_EXCHANGE.into(),
            AMQPValue::LongString(LongString::from(delivery.exchange.as_str())),
        );
        headers.insert(
            header::ORIGINAL_ROUTING_KEY.into(),
            AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
        );
        if let Some(job_id) = job_id {
            headers.insert(
                header::JOB_ID.into(),
                AMQPValue::LongString(LongString::from(job_id.to_string().as_str())),
            );
        }
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: &self.topology.names.dead_letter_exchange,
                routing_key: JOB_ROUTING_KEY,
                body: &delivery.data,
                content_type: &content_type,
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.as_str()),
                headers,
                mandatory: true,
            })
            .await;
        if let Err(error) = published {
            // Never drop a message we could not park: hand it back to the queue.
            tracing::warn!(%error, "dead-letter publish failed; requeueing the message");
            return nack(delivery, true).await;
        }
        let payload = serde_json::json!({
            "message_id": delivery.properties.message_id().as_ref().map(|m| m.as_str()),
            "content_type": content_type,
            "redelivered": delivery.redelivered,
        });
        if let Err(error) = self.record_dead_lettered(job, reason, payload).await {
            tracing::warn!(%error, "cannot record the dead-lettered message; handing it back");
            return nack(delivery, true).await;
        }
        if let Some(job_id) = job_id {
            self.events
                .job(EventKind::DeadLettered, job_id, &self.pool)
                .await;
        }
        ack(delivery).await
    }

    pub(super) async fn record_dead_lettered(
        &self,
        job: &JobContext,
        reason: &str,
        payload: serde_json::Value,
    ) -> Result<(), RecordError> {
        let mut tx = self.pool.begin().await?;
        let mut ended = false;
        if let Some(job_id) = job.job_id {
            ended =
                store::record_dead_lettered(&mut *tx, job_id, job.connection_id(), reason).await?;
        }
        self.audit
            .enqueue(
                &mut tx,
                job,
                proto::common::v1::EventKind::ImportDeadLettered,
                reason,
                payload,
            )
            .await?;
        tx.commit().await?;
        self.audit.committed();
        if ended {
            self.metrics.job_ended(JobStatus::DeadLettered);
        }
        Ok(())
    }
}
