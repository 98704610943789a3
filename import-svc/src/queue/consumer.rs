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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::publisher::Publisher;
use super::scheduler::{self, Admission, Scheduler};
use super::topology::Topology;
use super::trace_headers;
use crate::audit::{Auditor, JobContext, RecordError};
use crate::config::AmqpConfig;
use crate::events::{EventKind, Events};
use crate::job::body;
use crate::job::runner::{Outcome, Runner};
use crate::job::spec::{self, JobSpec};
use crate::job::store::{self, JobStatus};
use crate::metrics::ImportMetrics;

mod endings;

/// How often held jobs are touched (well inside `importer.reconcile_after_secs`).
const TOUCH_WAITING_EVERY: Duration = Duration::from_secs(60);

/// A valid job received, not yet started.
struct Received {
    delivery: Delivery,
    spec: JobSpec,
}

impl scheduler::Job for Received {
    fn job_id(&self) -> Uuid {
        self.spec.job_id
    }
}

/// A message that is no valid job: what is known of it, and why.
struct Rejected {
    job: JobContext,
    reason: String,
}

/// One session's work: the jobs waiting, and the tasks running jobs and other endings.
struct Work {
    scheduler: Scheduler<Received>,
    tasks: JoinSet<Result<(), SessionBroken>>,
    /// The connection of each task that runs a job, to free its turn when it ends.
    jobs: HashMap<tokio::task::Id, String>,
}

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
    /// Connections that hold running jobs' advisory locks, one per job slot, apart from
    /// `pool`: a replica running many (mostly rate-limit-waiting) jobs must not starve the
    /// pool its page writes and API calls use.
    pub locks: PgPool,
    pub audit: Auditor,
    pub max_concurrent_jobs: usize,
    /// Jobs of one connection at once, on this replica and (through a Postgres lock per
    /// slot) across replicas.
    pub max_jobs_per_connection: usize,
    pub shutdown_grace: Duration,
    /// How long one dependency outage may delay a job before it fails.
    pub max_outage: Duration,
    /// True while a session consumes; drives gRPC health.
    pub connected: Arc<AtomicBool>,
    pub metrics: ImportMetrics,
}

impl Consumer {
    /// Consumes until `shutdown`, reconnecting after every failure.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let outcome = self.session(&shutdown).await;
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

    async fn session(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (connection, channel) = self.open_session().await?;
        let (tag, mut deliveries) = consume(&channel, &self.topology.names.jobs_queue).await?;
        let (ledger_tag, mut dead_letters) =
            consume(&channel, &self.topology.names.dead_letter_ledger).await?;
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.names.jobs_queue, "consuming import jobs");

        // Cancelled when this session ends for any reason: in-flight jobs stop at their
        // next page and leave their message for redelivery.
        let in_flight_stop = CancellationToken::new();
        let mut work = Work {
            scheduler: Scheduler::new(self.max_concurrent_jobs, self.max_jobs_per_connection),
            tasks: JoinSet::new(),
            jobs: HashMap::new(),
        };
        // Jobs held waiting are touched now and then, so the reconciler never takes a
        // long wait behind a running job for a lost message.
        let mut touch = tokio::time::interval(TOUCH_WAITING_EVERY);
        touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => self.receive(delivery, &mut work),
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
                Some(joined) = work.tasks.join_next_with_id(), if !work.tasks.is_empty() => {
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, Some(outcome)),
                        Err(panic) => {
                            tracing::error!(error = %panic, "job task panicked");
                            (panic.id(), None)
                        }
                    };
                    if let Some(connection) = work.jobs.remove(&id) {
                        work.scheduler.finished(&connection);
                    }
                    if let Some(Err(broken)) = outcome {
                        break Err(broken.into());
                    }
                }
                _ = touch.tick() => self.touch_waiting(&mut work),
            }
            self.start_ready(&mut work, &in_flight_stop);
            self.metrics.set_jobs_waiting(work.scheduler.waiting());
        };

        // Stop intake first, give back what waits here, then let in-flight jobs
        // checkpoint and hand their messages back.
        for tag in [&tag, &ledger_tag] {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        for waiting in work.scheduler.drain_waiting() {
            let this = self.clone();
            work.tasks
                .spawn(async move { this.hand_back(&waiting.delivery).await });
        }
        self.metrics.set_jobs_waiting(0);
        in_flight_stop.cancel();
        self.drain(&mut work.tasks).await;
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
        result
    }

    /// Connects, declares the topology on a new channel and attaches the publisher.
    async fn open_session(&self) -> anyhow::Result<(Connection, lapin::Channel)> {
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
        Ok((connection, channel))
    }

    /// Reads a delivery and offers its job to the scheduler. A message that is no valid
    /// job is dead-lettered at once: it never waits for a job slot, and never blocks the
    /// jobs behind it.
    fn receive(&self, delivery: Delivery, work: &mut Work) {
        let spec = match self.read(&delivery) {
            Ok(spec) => spec,
            Err(rejected) => {
                let this = self.clone();
                work.tasks.spawn(
                    async move {
                        this.dead_letter(&delivery, &rejected.job, &rejected.reason)
                            .await
                    }
                    .instrument(tracing::Span::current()),
                );
                return;
            }
        };
        let connection = spec.connection_id.clone();
        let priority = spec.priority;
        if let Admission::Defer(received) =
            work.scheduler
                .admit(&connection, priority, Received { delivery, spec })
        {
            let this = self.clone();
            let span = trace_headers::job_span(&received.delivery);
            work.tasks.spawn(
                async move { this.defer(&received.delivery, &received.spec).await }
                    .instrument(span),
            );
        }
    }

    /// The job a delivery carries, or why it is none (for its dead letter).
    fn read(&self, delivery: &Delivery) -> Result<JobSpec, Box<Rejected>> {
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str().to_owned());
        let message_id = message_id_of(delivery);
        let wire = body::decode(&delivery.data, content_type.as_deref()).map_err(|invalid| {
            let job = JobContext::of_rejected_message(None, "", "", message_id.as_deref());
            Box::new(Rejected {
                job,
                reason: invalid.to_string(),
            })
        })?;
        let (connection_id, requested_by) = (wire.connection_id.clone(), wire.requested_by.clone());
        spec::validate(wire, false).map_err(|invalid| {
            let job = JobContext::of_rejected_message(
                invalid.job_id,
                &connection_id,
                &requested_by,
                message_id.as_deref(),
            );
            Box::new(Rejected {
                job,
                reason: invalid.to_string(),
            })
        })
    }

    /// Starts every job the scheduler says may start now, each in a task of its own.
    fn start_ready(&self, work: &mut Work, in_flight_stop: &CancellationToken) {
        while let Some((connection, received)) = work.scheduler.start_next() {
            let this = self.clone();
            let stop = in_flight_stop.child_token();
            // Everything the job does (leases, records, audit events) is in its producer's
            // trace.
            let span = trace_headers::job_span(&received.delivery);
            let task = work.tasks.spawn(
                async move { this.handle(&received.delivery, &received.spec, &stop).await }
                    .instrument(span),
            );
            work.jobs.insert(task.id(), connection);
        }
    }

    /// Notes on the held jobs' rows that they are accounted for (a background write: a
    /// slow database never holds up the session).
    fn touch_waiting(&self, work: &mut Work) {
        let job_ids = work.scheduler.waiting_ids();
        if job_ids.is_empty() {
            return;
        }
        let pool = self.pool.clone();
        work.tasks.spawn(async move {
            if let Err(error) = store::touch(&pool, &job_ids).await {
                tracing::debug!(%error, "cannot note the waiting jobs as held");
            }
            Ok(())
        });
    }

    /// Waits up to the shutdown grace for the (stopped) in-flight jobs, then aborts them.
    async fn drain(&self, tasks: &mut JoinSet<Result<(), SessionBroken>>) {
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
    }

    /// Handles one valid job's delivery to the end: run, defer, or hand back.
    async fn handle(
        &self,
        delivery: &Delivery,
        spec: &JobSpec,
        stop: &CancellationToken,
    ) -> Result<(), SessionBroken> {
        match self.run_exclusively(delivery, spec, stop).await {
            Ok(settled) => settled,
            Err(error) => {
                let job = JobContext::of_spec(spec);
                self.retry_later(delivery, &job, &format!("database unavailable: {error}"))
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
        let mut lock = self.locks.acquire().await?;
        // A session lock lives as long as its connection. Closing the connection instead
        // of returning it to the pool means a task aborted mid-job (shutdown grace over)
        // cannot leave the job locked on a pooled connection for good.
        lock.close_on_drop();
        // One job per connection across replicas: another replica runs this connection's
        // job now, so this one waits its turn in the delay tier.
        let Some(slot) = store::try_lock_connection(
            &mut lock,
            &spec.connection_id,
            self.max_jobs_per_connection,
        )
        .await?
        else {
            drop(lock);
            return Ok(self.defer(delivery, spec).await);
        };
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
                let _running = self.metrics.job_running();
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
        // Closing the connection on drop releases it too; unlocked now, the connection's
        // next job may start on another replica without waiting for the close.
        if let Err(error) = store::unlock_connection(&mut lock, &slot).await {
            tracing::debug!(job_id = %spec.job_id, %error, "connection unlock failed; the close releases it");
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
            self.metrics.job_ended(JobStatus::Cancelled);
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
