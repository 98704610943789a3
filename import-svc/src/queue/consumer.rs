//! The job consumer: one AMQP session at a time, rebuilt whenever it breaks.
//!
//! A delivery is acknowledged only after its effect is committed (job finished, failed,
//! cancelled, dead-lettered with confirm, or parked in a retry tier with confirm).
//! Redelivery is normal and harmless: a finished job id is acked without running again,
//! and an interrupted one resumes from its checkpoint. The quorum queue's delivery limit
//! is kept for poison messages: a job that cannot run *now* (a dependency is down) or is
//! stopped by a graceful shutdown is published again and acked, never handed back (see
//! [`super::retry`]). An `ack` that lapin reports as not sent (dead channel) and a
//! consumer stream that simply ends are both treated as a broken session: everything in
//! flight stops and the consumer reconnects.
//!
//! The same session consumes the dead-letter ledger ([`super::ledger`]), so a message the
//! broker dead-letters (delivery limit, TTL, policy) ends its job visibly too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use proto::queue::{JOB_ROUTING_KEY, header, retry_routing_key};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ledger;
use super::publisher::{Outgoing, Publisher};
use super::retry::{self, Plan};
use super::topology::Topology;
use crate::audit::{Auditor, JobContext, RecordError};
use crate::config::AmqpConfig;
use crate::events::{EventKind, Events};
use crate::job::body;
use crate::job::runner::{Outcome, Runner};
use crate::job::spec::{self, JobSpec};
use crate::job::store::{self, JobStatus};

/// The session cannot go on (ack not delivered, channel gone): reconnect.
#[derive(Debug, thiserror::Error)]
#[error("amqp session broken: {0}")]
struct SessionBroken(String);

#[derive(Clone)]
pub struct Consumer {
    pub config: AmqpConfig,
    pub topology: Topology,
    pub runner: Runner,
    pub publisher: Arc<Publisher>,
    pub events: Arc<Events>,
    pub pool: PgPool,
    pub audit: Auditor,
    pub max_concurrent_jobs: usize,
    pub shutdown_grace: Duration,
    /// How long one dependency outage may delay a job before it fails.
    pub max_outage: Duration,
    /// True while a session consumes; drives gRPC health.
    pub connected: Arc<AtomicBool>,
}

impl Consumer {
    /// Consumes until `shutdown`, reconnecting after every failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.max_concurrent_jobs));
        while !shutdown.is_cancelled() {
            let outcome = self.session(&shutdown, slots.clone()).await;
            self.connected.store(false, Ordering::SeqCst);
            self.publisher.detach().await;
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "amqp session ended; reconnecting"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(self.config.reconnect_delay_ms)) => {}
                    }
                }
            }
        }
        tracing::info!("job consumer stopped");
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        slots: Arc<Semaphore>,
    ) -> anyhow::Result<()> {
        let connection = Connection::connect_with_config(
            self.config.url.expose_secret(),
            ConnectionProperties::default(),
            self.config.lapin_tls()?,
            lapin::runtime::default_runtime()?,
        )
        .await
        .map_err(|e| anyhow::anyhow!("connect to {}: {e}", self.config.redacted_url()))?;
        let channel = connection.create_channel().await?;
        self.topology
            .declare(&channel, self.config.delivery_limit)
            .await?;
        // Bounded prefetch: a consumer holds only as many jobs as it can work on soon.
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        self.publisher.attach(&connection).await?;
        let (tag, mut deliveries) = consume(&channel, &self.topology.names.jobs_queue).await?;
        let (ledger_tag, mut dead_letters) =
            consume(&channel, &self.topology.names.dead_letter_ledger).await?;
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.names.jobs_queue, "consuming import jobs");

        // Cancelled when this session ends for any reason: in-flight jobs stop at their
        // next page and leave their message for redelivery.
        let in_flight_stop = CancellationToken::new();
        let mut tasks: JoinSet<Result<(), SessionBroken>> = JoinSet::new();
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let permit = tokio::select! {
                            permit = slots.clone().acquire_owned() => permit?,
                            () = shutdown.cancelled() => {
                                // Not started: give it back now.
                                let _ = self.hand_back(&delivery).await;
                                break Ok(());
                            }
                        };
                        let this = self.clone();
                        let stop = in_flight_stop.child_token();
                        tasks.spawn(async move {
                            let outcome = this.handle(delivery, &stop).await;
                            drop(permit);
                            outcome
                        });
                    }
                    Some(Err(error)) => break Err(anyhow::anyhow!("consumer error: {error}")),
                    None => break Err(anyhow::anyhow!("consumer stream ended")),
                },
                next = dead_letters.next() => match next {
                    // One at a time, in the session's own task: the ledger is small work
                    // and must never wait behind a job slot.
                    Some(Ok(delivery)) => {
                        if let Err(broken) = self.account_dead_letter(&delivery).await {
                            break Err(broken.into());
                        }
                    }
                    Some(Err(error)) => break Err(anyhow::anyhow!("ledger consumer error: {error}")),
                    None => break Err(anyhow::anyhow!("ledger consumer stream ended")),
                },
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    match joined {
                        Ok(Ok(())) => {}
                        Ok(Err(broken)) => break Err(broken.into()),
                        Err(panic) => tracing::error!(error = %panic, "job task panicked"),
                    }
                }
            }
        };

        // Stop intake first, then let in-flight jobs checkpoint and hand their messages back.
        for tag in [&tag, &ledger_tag] {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        in_flight_stop.cancel();
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok(Err(broken)) = joined {
                    tracing::warn!(%broken, "in-flight job could not settle its message");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "in-flight jobs did not stop in time; their messages will be redelivered"
            );
            tasks.abort_all();
        }
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
        result
    }

    /// Handles one delivery to the end: run, dead-letter, or hand back.
    async fn handle(
        &self,
        delivery: Delivery,
        stop: &CancellationToken,
    ) -> Result<(), SessionBroken> {
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_owned());
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let wire = match body::decode(&delivery.data, content_type.as_deref()) {
            Ok(wire) => wire,
            Err(invalid) => {
                let job = JobContext::of_rejected_message(None, "", "", message_id.as_deref());
                return self
                    .dead_letter(&delivery, &job, &invalid.to_string())
                    .await;
            }
        };
        let (connection_id, requested_by) = (wire.connection_id.clone(), wire.requested_by.clone());
        let spec = match spec::validate(wire, false) {
            Ok(spec) => spec,
            Err(invalid) => {
                let job = JobContext::of_rejected_message(
                    invalid.job_id,
                    &connection_id,
                    &requested_by,
                    message_id.as_deref(),
                );
                return self
                    .dead_letter(&delivery, &job, &invalid.to_string())
                    .await;
            }
        };
        match self.run_exclusively(&delivery, &spec, stop).await {
            Ok(settled) => settled,
            Err(error) => {
                let job = JobContext::of_spec(&spec);
                self.retry_later(&delivery, &job, &format!("database unavailable: {error}"))
                    .await
            }
        }
    }

    /// Runs the job unless it already finished and settles its message, holding a Postgres
    /// advisory lock on its id so two deliveries of the same job never run at once (on any
    /// replica).
    ///
    /// The lock is held until the outcome is recorded: a duplicate delivery waiting on it
    /// must find the job final (and be acked unrun), never still `running` — `claim`
    /// accepts `running` so that a job interrupted by a crash can resume.
    async fn run_exclusively(
        &self,
        delivery: &Delivery,
        spec: &JobSpec,
        stop: &CancellationToken,
    ) -> Result<Result<(), SessionBroken>, RecordError> {
        store::insert_queued(&self.pool, spec).await?;
        let mut lock = self.pool.acquire().await?;
        // A session lock lives as long as its connection. Closing the connection instead
        // of returning it to the pool means a task aborted mid-job (shutdown grace over)
        // cannot leave the job locked on a pooled connection for good.
        lock.close_on_drop();
        let key = spec.job_id.to_string();
        tokio::select! {
            locked = sqlx::query(store::JOB_LOCK_SQL).bind(&key).execute(&mut *lock) => { locked?; }
            () = stop.cancelled() => {
                // Never started: hand the message back without touching the job.
                return Ok(self.hand_back(delivery).await);
            }
        }
        let mut job = JobContext::of_spec(spec);
        // On error the connection closes on drop, releasing the lock; the caller nacks.
        let outcome = match self.claim(spec.job_id, &mut job).await? {
            Some(row) if row.status() == JobStatus::Running => {
                Some(self.runner.run(spec, &mut job, stop).await)
            }
            // Finished (or cancelled while queued): this delivery is a duplicate.
            Some(_) | None => None,
        };
        let settled = self.settle(delivery, spec, &job, outcome).await;
        // Only now may another delivery of this job look at it. If the unlock fails the
        // connection is closed on drop, which releases the lock all the same.
        if let Err(error) = sqlx::query(store::JOB_UNLOCK_SQL)
            .bind(&key)
            .execute(&mut *lock)
            .await
        {
            tracing::warn!(job_id = %spec.job_id, %error, "advisory unlock failed; closing its connection");
        }
        Ok(settled)
    }

    /// Moves the job to running; a queued job whose cancel was requested is cancelled
    /// instead (and that recorded). `job` learns what earlier attempts stored.
    async fn claim(
        &self,
        job_id: Uuid,
        job: &mut JobContext,
    ) -> Result<Option<store::JobRow>, RecordError> {
        let mut tx = self.pool.begin().await?;
        if let Some(cancelled) = store::cancel_if_requested(&mut tx, job_id).await? {
            job.learn_stored(&cancelled);
            self.audit.job_ended(&mut tx, job, &cancelled).await?;
            tx.commit().await?;
            self.audit.committed();
            return Ok(Some(cancelled));
        }
        let claimed = store::claim(&mut tx, job_id).await?;
        tx.commit().await?;
        if let Some(row) = &claimed {
            job.learn_stored(row);
        }
        Ok(claimed)
    }

    /// Records the outcome, publishes its event, then settles the message.
    async fn settle(
        &self,
        delivery: &Delivery,
        spec: &JobSpec,
        job: &JobContext,
        outcome: Option<Outcome>,
    ) -> Result<(), SessionBroken> {
        let job_id = spec.job_id;
        let (status, reason, event) = match outcome {
            None => {
                ack(delivery).await?;
                // Logged after the ack so the line means "handled", not "about to be".
                tracing::info!(%job_id, "job already finished; acknowledged the duplicate delivery");
                return Ok(());
            }
            Some(Outcome::Completed) => (JobStatus::Completed, None, EventKind::Completed),
            Some(Outcome::Cancelled) => (JobStatus::Cancelled, None, EventKind::Cancelled),
            Some(Outcome::Failed(reason)) => (JobStatus::Failed, Some(reason), EventKind::Failed),
            Some(Outcome::Refused(reason)) => {
                return self.dead_letter(delivery, job, &reason).await;
            }
            Some(Outcome::Interrupted) => {
                let _ = store::requeue(&self.pool, job_id).await;
                return self.hand_back(delivery).await;
            }
            Some(Outcome::Retry(reason)) => {
                return self.retry_later(delivery, job, &reason).await;
            }
        };
        self.end(delivery, job, status, reason.as_deref(), event)
            .await
    }

    /// Records the job's end and its audit event, publishes its job event, then acks. If
    /// the end cannot be recorded (Postgres down) the message waits in a retry tier.
    async fn end(
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
    async fn retry_later(
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

    /// Gives a job that was stopped (not failed) back to the queue without spending the
    /// delivery limit: a confirmed copy goes to the jobs exchange and the original is
    /// acked, so rolling restarts never dead-letter a long job. If the copy cannot be
    /// published the original is handed back the ordinary way.
    async fn hand_back(&self, delivery: &Delivery) -> Result<(), SessionBroken> {
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
    async fn account_dead_letter(&self, delivery: &Delivery) -> Result<(), SessionBroken> {
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
    async fn record_broker_dead_letter(
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
        Ok(ended)
    }

    /// Ends the job and records its audit event, in one transaction.
    async fn finish(
        &self,
        job: &JobContext,
        status: JobStatus,
        reason: Option<&str>,
    ) -> Result<(), RecordError> {
        let Some(job_id) = job.job_id else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        if let Some(row) = store::finish(&mut *tx, job_id, status, reason).await? {
            self.audit.job_ended(&mut tx, job, &row).await?;
        }
        tx.commit().await?;
        self.audit.committed();
        Ok(())
    }

    /// Sends the message to the dead-letter queue with its reason (confirmed), then records
    /// the job as dead-lettered (when its id is known) and the audit event in one
    /// transaction, then acks the original. If that record cannot be written the message
    /// is handed back: a second copy in the dead-letter queue is harmless, a refusal with
    /// no audit event is not.
    async fn dead_letter(
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

    async fn record_dead_lettered(
        &self,
        job: &JobContext,
        reason: &str,
        payload: serde_json::Value,
    ) -> Result<(), RecordError> {
        let mut tx = self.pool.begin().await?;
        if let Some(job_id) = job.job_id {
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
        Ok(())
    }
}

/// Starts consuming `queue` with manual acknowledgement (ack only after the effect is
/// committed). Returns the consumer tag and the deliveries.
async fn consume(
    channel: &lapin::Channel,
    queue: &str,
) -> lapin::Result<(String, lapin::Consumer)> {
    let tag = format!("import-svc-{}", Uuid::new_v4().simple());
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((tag, consumer))
}

fn content_type_of(delivery: &Delivery) -> String {
    delivery
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default()
}

fn message_id_of(delivery: &Delivery) -> Option<String> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
}

async fn ack(delivery: &Delivery) -> Result<(), SessionBroken> {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(SessionBroken("ack not sent: the channel is gone".into())),
        Err(error) => Err(SessionBroken(format!("ack failed: {error}"))),
    }
}

async fn nack(delivery: &Delivery, requeue: bool) -> Result<(), SessionBroken> {
    match delivery
        .acker
        .nack(BasicNackOptions {
            requeue,
            ..Default::default()
        })
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(SessionBroken("nack not sent: the channel is gone".into())),
        Err(error) => Err(SessionBroken(format!("nack failed: {error}"))),
    }
}
