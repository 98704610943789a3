//! Delivering the outbox to audit-svc: in `seq` order, in batches, until accepted.
//!
//! One relay per database delivers at a time (a transaction-scoped advisory lock), so two
//! replicas never interleave batches; the others wait and take over if it dies. A batch
//! is marked delivered in the same transaction that read it, after `Record` succeeded; a
//! crash in between redelivers it, which audit-svc absorbs by event id.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit_limits::MAX_RECORD_BYTES;
use proto::common::v1::AuditEvent;
use rand::Rng;
use secrecy::SecretString;
use service_runtime::caller_auth::BearerToken;
use service_runtime::config::{ClientTls, ConfigError};
use service_runtime::metrics::Metrics;
use service_runtime::tls::grpc_endpoint;
use service_runtime::trace_context::WithTraceContext;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::config::OutboxConfig;
use crate::metrics::OutboxMetrics;
use crate::record_call;

/// Only one relay delivers at a time.
const RELAY_LOCK: i64 = 0x6175_6469_745f_726c; // "audit_rl"
/// audit-svc accepts at most this many events per `Record`.
pub const MAX_BATCH: u32 = proto::audit_limits::MAX_EVENTS_PER_RECORD as u32;
/// What an event adds to a `RecordRequest` beyond its own encoding (field tag and length).
const PER_EVENT_OVERHEAD: usize = 8;
/// Consecutive failures after which the relay logs at ERROR (someone must look).
const FAILURES_BEFORE_ERROR: u32 = 10;

#[derive(Clone)]
pub struct RelayConfig {
    /// audit-svc's gRPC address, e.g. `http://127.0.0.1:50053`.
    pub endpoint: String,
    /// The producer's `audit_writer` credential; none when its client certificate is.
    pub token: Option<SecretString>,
    /// TLS to audit-svc, for an `https://` endpoint.
    pub tls: Option<ClientTls>,
    pub batch_size: u32,
    /// How often to look for events when nobody woke the relay.
    pub poll_interval: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub request_timeout: Duration,
    /// Delivered rows older than this are deleted (audit-svc holds them now).
    pub keep_delivered: Duration,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("tls", &self.tls)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .field("keep_delivered", &self.keep_delivered)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("audit relay configuration: {0}")]
    Config(String),
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("outbox row {seq} does not decode as an AuditEvent: {source}")]
    Corrupt {
        seq: i64,
        source: prost::DecodeError,
    },
    #[error("audit-svc did not accept the batch: {0}")]
    Rejected(tonic::Status),
}

/// What to do about audit-svc's refusal of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not about the events (audit-svc or its database down, a timeout, the credential
    /// unknown or without a grant): keep them and retry with backoff.
    Transient,
    /// audit-svc named this event of the batch as one it will never accept.
    Event(usize),
    /// Refused as a whole for what it holds, naming no event: try the events one by one.
    Batch,
}

/// The index `i` of a refusal naming `events[i]` (audit-svc's messages start with the field).
fn event_index(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("events[")?;
    let end = rest.find(']')?;
    rest[..end].parse().ok()
}

fn classify(status: &tonic::Status, batch_len: usize) -> Refusal {
    use tonic::Code;
    let about_content = matches!(
        status.code(),
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::FailedPrecondition
    );
    if !about_content {
        return Refusal::Transient;
    }
    if let Some(i) = event_index(status.message()).filter(|i| *i < batch_len) {
        return Refusal::Event(i);
    }
    match status.code() {
        // Too many events or bytes for one request, or a refusal that does not say which
        // event: each event on its own tells.
        Code::InvalidArgument | Code::OutOfRange if batch_len > 1 => Refusal::Batch,
        Code::InvalidArgument | Code::OutOfRange => Refusal::Event(0),
        // A PERMISSION_DENIED naming no event is about the credential, not the events.
        _ => Refusal::Transient,
    }
}

/// One outbox row as the relay reads it.
struct Row {
    seq: i64,
    event: AuditEvent,
    /// The trace context the event was enqueued under, if that work was traced.
    traceparent: Option<String>,
}

/// Wakes the relay now instead of at its next poll (call after committing events).
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

type Client = AuditServiceClient<InterceptedService<Channel, WithTraceContext<BearerToken>>>;

pub struct Relay {
    pool: PgPool,
    client: Client,
    config: RelayConfig,
    waker: Waker,
    metrics: OutboxMetrics,
}

impl Relay {
    /// Connects lazily: audit-svc may be down when the producer starts.
    pub fn new(pool: PgPool, config: RelayConfig) -> Result<Relay, RelayError> {
        if config.batch_size == 0 || config.batch_size > MAX_BATCH {
            return Err(RelayError::Config(format!(
                "batch_size must be between 1 and {MAX_BATCH}"
            )));
        }
        // Both producers keep these settings under `[audit]`.
        let refused = |e: ConfigError| RelayError::Config(e.within("audit").to_string());
        let endpoint = grpc_endpoint("endpoint", &config.endpoint, config.tls.as_ref())
            .map_err(refused)?
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout);
        let bearer = BearerToken::optional(config.token.as_ref()).map_err(refused)?;
        let client =
            AuditServiceClient::with_interceptor(endpoint.connect_lazy(), WithTraceContext(bearer));
        Ok(Relay {
            pool,
            client,
            config,
            waker: Waker::default(),
            metrics: OutboxMetrics::default(),
        })
    }

    /// The relay `config` asks for. Without a credential there is none: events wait in
    /// the outbox until one is configured, and a warning says so.
    pub fn from_config(pool: PgPool, config: &OutboxConfig) -> Result<Option<Relay>, RelayError> {
        let Some(relay_config) = config.relay_config() else {
            tracing::warn!(
                "no audit.token or audit.tls client certificate configured: audit events stay in the outbox"
            );
            return Ok(None);
        };
        Relay::new(pool, relay_config).map(Some)
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Exports the outbox in `metrics`, under the registry's prefix: its backlog, the
    /// oldest pending event's age and the quarantine (read on scrape), and what this
    /// relay delivered or failed to ([`crate::metrics`]).
    pub fn with_metrics(mut self, metrics: &Metrics) -> Relay {
        self.metrics = OutboxMetrics::registered(metrics, self.pool.clone());
        self
    }

    /// Delivers until `shutdown`. Failures back off exponentially (with jitter) up to
    /// `max_backoff` and are retried for as long as the process runs.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.min_backoff;
        let mut failures: u32 = 0;
        let mut last_prune = tokio::time::Instant::now();
        loop {
            match self.deliver_batch().await {
                Ok(Delivery::Delivered(_) | Delivery::Sorted { .. }) => {
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "audit-svc accepts events again");
                    }
                    failures = 0;
                    backoff = self.config.min_backoff;
                    // More may be waiting (a batch is also cut by bytes): go on without
                    // sleeping until nothing is left.
                    continue;
                }
                Ok(Delivery::Idle) | Ok(Delivery::OtherRelayActive) => {
                    failures = 0;
                    backoff = self.config.min_backoff;
                }
                Err(error) => {
                    failures += 1;
                    self.metrics.delivery_failed();
                    if failures >= FAILURES_BEFORE_ERROR {
                        tracing::error!(error = %error, failures, "audit events are not being delivered");
                    } else {
                        tracing::warn!(error = %error, failures, "audit delivery failed; retrying");
                    }
                    let jitter = rand::thread_rng().gen_range(0.5..1.0);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    continue;
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                if let Err(error) = self.prune().await {
                    tracing::warn!(%error, "cannot prune delivered audit events");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Delivers the oldest pending batch, if this relay holds the delivery lock.
    ///
    /// A batch holds at most `batch_size` events and [`MAX_RECORD_BYTES`] encoded bytes
    /// (always at least one event). If audit-svc refuses one of its events as invalid (it
    /// names `events[i]`), that event moves to `audit_outbox_quarantine` with the refusal
    /// and the rest go in the next attempt; a refusal of the whole batch naming no event is
    /// sorted out by sending the events one by one. Anything else (audit-svc down, a
    /// timeout, a credential problem) leaves every event pending and is an error.
    pub async fn deliver_batch(&self) -> Result<Delivery, RelayError> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !leader {
            return Ok(Delivery::OtherRelayActive);
        }
        let stored: Vec<(i64, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT seq, event, traceparent FROM audit_outbox WHERE delivered_at IS NULL \
             ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(self.config.batch_size))
        .fetch_all(&mut *tx)
        .await?;
        if stored.is_empty() {
            return Ok(Delivery::Idle);
        }
        let mut rows = Vec::with_capacity(stored.len());
        let mut bytes = 0;
        for (seq, encoded, traceparent) in stored {
            bytes += encoded.len() + PER_EVENT_OVERHEAD;
            if !rows.is_empty() && bytes > MAX_RECORD_BYTES {
                break;
            }
            match AuditEvent::decode(encoded.as_slice()) {
                Ok(event) => {
                    bytes += record_call::trace_entry_bytes(&event, traceparent.as_deref());
                    rows.push(Row {
                        seq,
                        event,
                        traceparent,
                    });
                }
                Err(source) => {
                    // Stored by something other than `enqueue`: it can never be sent.
                    let error = RelayError::Corrupt { seq, source };
                    quarantine(&mut tx, seq, "corrupt", &error.to_string()).await?;
                    tx.commit().await?;
                    tracing::error!(%error, "audit event quarantined");
                    return Ok(Delivery::Sorted {
                        delivered: 0,
                        quarantined: 1,
                    });
                }
            }
        }
        let outcome = match self.send(&rows).await {
            Ok(()) => {
                mark_delivered(&mut tx, &rows).await?;
                Delivery::Delivered(rows.len())
            }
            Err(status) => match classify(&status, rows.len()) {
                Refusal::Transient => return Err(RelayError::Rejected(status)),
                Refusal::Event(i) => {
                    self.quarantine_refused(&mut tx, &rows[i], &status).await?;
                    Delivery::Sorted {
                        delivered: 0,
                        quarantined: 1,
                    }
                }
                Refusal::Batch => self.one_by_one(&mut tx, &rows).await?,
            },
        };
        tx.commit().await?;
        match outcome {
            Delivery::Delivered(count) => {
                self.metrics.delivered(count);
                tracing::debug!(count, first_seq = rows[0].seq, "delivered audit events");
            }
            Delivery::Sorted { delivered, .. } => self.metrics.delivered(delivered),
            Delivery::Idle | Delivery::OtherRelayActive => {}
        }
        Ok(outcome)
    }

    /// One `Record` call with `rows`, each event with the trace context it was enqueued
    /// under ([`record_call`]).
    async fn send(&self, rows: &[Row]) -> Result<(), tonic::Status> {
        let (request, span) = record_call::request(
            rows.iter()
                .map(|row| (&row.event, row.traceparent.as_deref())),
        );
        let mut client = self.client.clone();
        async move { client.record(request).await.map(|_| ()) }
            .instrument(span)
            .await
    }

    /// Each of `rows` on its own, after audit-svc refused them together without naming
    /// one. Stops at the first transient failure, keeping what was already settled.
    async fn one_by_one(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[Row],
    ) -> Result<Delivery, RelayError> {
        let (mut delivered, mut quarantined) = (0, 0);
        for row in rows {
            match self.send(std::slice::from_ref(row)).await {
                Ok(()) => {
                    mark_delivered(tx, std::slice::from_ref(row)).await?;
                    delivered += 1;
                }
                Err(status) => match classify(&status, 1) {
                    Refusal::Event(_) | Refusal::Batch => {
                        self.quarantine_refused(tx, row, &status).await?;
                        quarantined += 1;
                    }
                    Refusal::Transient if delivered + quarantined == 0 => {
                        return Err(RelayError::Rejected(status));
                    }
                    Refusal::Transient => break,
                },
            }
        }
        Ok(Delivery::Sorted {
            delivered,
            quarantined,
        })
    }

    async fn quarantine_refused(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &Row,
        status: &tonic::Status,
    ) -> Result<(), RelayError> {
        let code = format!("{:?}", status.code());
        quarantine(tx, row.seq, &code, status.message()).await?;
        // Someone must look: the event is kept, but audit-svc does not have it.
        tracing::error!(
            seq = row.seq,
            event_id = %row.event.event_id,
            code = %code,
            reason = %status.message(),
            "audit-svc refused an audit event; it is quarantined and the others go on"
        );
        Ok(())
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        let keep = chrono::Duration::from_std(self.config.keep_delivered)
            .unwrap_or(chrono::Duration::days(7));
        sqlx::query("DELETE FROM audit_outbox WHERE delivered_at < $1")
            .bind(chrono::Utc::now() - keep)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn mark_delivered(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[Row],
) -> Result<(), sqlx::Error> {
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    sqlx::query("UPDATE audit_outbox SET delivered_at = now() WHERE seq = ANY($1)")
        .bind(&seqs)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves the outbox row `seq` to the quarantine with audit-svc's answer.
async fn quarantine(
    tx: &mut Transaction<'_, Postgres>,
    seq: i64,
    code: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH moved AS (DELETE FROM audit_outbox WHERE seq = $1 \
             RETURNING seq, event_id, kind, tenant, event, enqueued_at) \
         INSERT INTO audit_outbox_quarantine \
             (seq, event_id, kind, tenant, event, enqueued_at, code, reason) \
         SELECT seq, event_id, kind, tenant, event, enqueued_at, $2, $3 FROM moved",
    )
    .bind(seq)
    .bind(code)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Events waiting in the quarantine (see [`crate::QUARANTINE_SQL`]).
pub async fn quarantined_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM audit_outbox_quarantine")
        .fetch_one(pool)
        .await
}

/// What one delivery attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A batch accepted.
    Delivered(usize),
    /// audit-svc refused events as invalid: `quarantined` of them moved to the quarantine,
    /// `delivered` others accepted on the way.
    Sorted {
        delivered: usize,
        quarantined: usize,
    },
    /// Nothing pending.
    Idle,
    /// Another relay holds the delivery lock.
    OtherRelayActive,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn refusals_naming_an_event_quarantine_it_and_others_are_retried() {
        let named = |code, message: &str| classify(&Status::new(code, message), 5);
        assert_eq!(
            named(
                Code::InvalidArgument,
                "events[3].subject.id: longer than 256 bytes"
            ),
            Refusal::Event(3)
        );
        assert_eq!(
            named(
                Code::PermissionDenied,
                "events[1].kind: caller \"x\" may not record ..."
            ),
            Refusal::Event(1)
        );
        assert_eq!(
            named(Code::AlreadyExists, "events[0].event_id: already recorded"),
            Refusal::Event(0)
        );
        // An index beyond the batch names nothing in it.
        assert_eq!(
            named(Code::InvalidArgument, "events[9].tenant: x"),
            Refusal::Batch
        );
        assert_eq!(
            named(Code::OutOfRange, "decoded message too large"),
            Refusal::Batch
        );
        assert_eq!(
            classify(
                &Status::invalid_argument("events: at most 1000 per call"),
                1
            ),
            Refusal::Event(0)
        );
        for (code, message) in [
            (Code::Unavailable, "events[0].tenant: looks like an index"),
            (Code::DeadlineExceeded, ""),
            (Code::Unauthenticated, "unknown credential"),
            (Code::PermissionDenied, "caller \"x\" may not call Record"),
            (
                Code::PermissionDenied,
                "events: caller \"x\" has no writer grant",
            ),
            (Code::Internal, "internal error"),
            (
                Code::Aborted,
                "concurrent appends collided; retry the request",
            ),
        ] {
            assert_eq!(
                named(code, message),
                Refusal::Transient,
                "{code:?} {message}"
            );
        }
    }
}
