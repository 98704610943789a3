//! Delivering the outbox to audit-svc: in `seq` order, in batches, until accepted.
//!
//! One relay per database delivers at a time (a transaction-scoped advisory lock), so two
//! replicas never interleave batches; the others wait and take over if it dies. A batch
//! is marked delivered in the same transaction that read it, after `Record` succeeded; a
//! crash in between redelivers it, which audit-svc absorbs by event id.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use proto::audit::v1::RecordRequest;
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::common::v1::AuditEvent;
use rand::Rng;
use secrecy::SecretString;
use service_runtime::caller_auth::BearerToken;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::OutboxConfig;

/// Only one relay delivers at a time.
const RELAY_LOCK: i64 = 0x6175_6469_745f_726c; // "audit_rl"
/// audit-svc accepts at most this many events per `Record`.
pub const MAX_BATCH: u32 = 1_000;
/// Consecutive failures after which the relay logs at ERROR (someone must look).
const FAILURES_BEFORE_ERROR: u32 = 10;

#[derive(Clone)]
pub struct RelayConfig {
    /// audit-svc's gRPC address, e.g. `http://127.0.0.1:50053`.
    pub endpoint: String,
    /// The producer's `audit_writer` credential.
    pub token: SecretString,
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
            .field("token", &"[REDACTED]")
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

/// Wakes the relay now instead of at its next poll (call after committing events).
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

type Client = AuditServiceClient<InterceptedService<Channel, BearerToken>>;

pub struct Relay {
    pool: PgPool,
    client: Client,
    config: RelayConfig,
    waker: Waker,
}

impl Relay {
    /// Connects lazily: audit-svc may be down when the producer starts.
    pub fn new(pool: PgPool, config: RelayConfig) -> Result<Relay, RelayError> {
        if config.batch_size == 0 || config.batch_size > MAX_BATCH {
            return Err(RelayError::Config(format!(
                "batch_size must be between 1 and {MAX_BATCH}"
            )));
        }
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| RelayError::Config(format!("endpoint: {e}")))?
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout);
        let bearer = BearerToken::new(&config.token)
            .map_err(|e| RelayError::Config(format!("token: {e}")))?;
        let client = AuditServiceClient::with_interceptor(endpoint.connect_lazy(), bearer);
        Ok(Relay {
            pool,
            client,
            config,
            waker: Waker::default(),
        })
    }

    /// The relay `config` asks for. Without a credential there is none: events wait in
    /// the outbox until one is configured, and a warning says so.
    pub fn from_config(pool: PgPool, config: &OutboxConfig) -> Result<Option<Relay>, RelayError> {
        let Some(relay_config) = config.relay_config() else {
            tracing::warn!("no audit.token configured: audit events stay in the outbox");
            return Ok(None);
        };
        Relay::new(pool, relay_config).map(Some)
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Delivers until `shutdown`. Failures back off exponentially (with jitter) up to
    /// `max_backoff` and are retried for as long as the process runs.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.min_backoff;
        let mut failures: u32 = 0;
        let mut last_prune = tokio::time::Instant::now();
        loop {
            match self.deliver_batch().await {
                Ok(Delivery::Delivered(count)) => {
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "audit-svc accepts events again");
                    }
                    failures = 0;
                    backoff = self.config.min_backoff;
                    if count == self.config.batch_size as usize {
                        // More may be waiting: go on without sleeping.
                        continue;
                    }
                }
                Ok(Delivery::Idle) | Ok(Delivery::OtherRelayActive) => {
                    failures = 0;
                    backoff = self.config.min_backoff;
                }
                Err(error) => {
                    failures += 1;
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
    pub async fn deliver_batch(&self) -> Result<Delivery, RelayError> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !leader {
            return Ok(Delivery::OtherRelayActive);
        }
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, event FROM audit_outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(self.config.batch_size))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Delivery::Idle);
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            let event = AuditEvent::decode(bytes.as_slice())
                .map_err(|source| RelayError::Corrupt { seq, source })?;
            events.push(event);
            seqs.push(seq);
        }
        let count = events.len();
        self.client
            .clone()
            .record(RecordRequest { events })
            .await
            .map_err(RelayError::Rejected)?;
        sqlx::query("UPDATE audit_outbox SET delivered_at = now() WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(count, first_seq = seqs.first(), "delivered audit events");
        Ok(Delivery::Delivered(count))
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

/// What one delivery attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered(usize),
    /// Nothing pending.
    Idle,
    /// Another relay holds the delivery lock.
    OtherRelayActive,
}
