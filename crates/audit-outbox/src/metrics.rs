//! The outbox in the producer's `/metrics`, under the producer's prefix
//! (`auth_svc_audit_outbox_pending`, ...).
//!
//! The backlog, its oldest event's age and the quarantine are read from the outbox tables
//! when Prometheus scrapes, so they hold across replicas and restarts and are exact at the
//! scrape; deliveries and failed attempts are counted by the relay that made them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use service_runtime::metrics::Metrics;
use sqlx::PgPool;

use crate::health::health;

/// Counted into nothing until [`OutboxMetrics::registered`].
#[derive(Clone, Default)]
pub(crate) struct OutboxMetrics {
    pending: Gauge,
    oldest_pending_seconds: Gauge,
    quarantined: Gauge,
    delivered: Counter,
    delivery_failures: Counter,
}

impl OutboxMetrics {
    /// Registers the outbox's families in `metrics`, the gauges read from `pool` on scrape.
    pub(crate) fn registered(metrics: &Metrics, pool: PgPool) -> OutboxMetrics {
        let outbox = OutboxMetrics::default();
        metrics.register(
            "audit_outbox_pending",
            "Audit events not yet accepted by audit-svc (the backlog)",
            outbox.pending.clone(),
        );
        metrics.register(
            "audit_outbox_oldest_pending_seconds",
            "Age of the oldest audit event not yet accepted by audit-svc (0 without a backlog)",
            outbox.oldest_pending_seconds.clone(),
        );
        metrics.register(
            "audit_outbox_quarantined",
            "Audit events audit-svc refused as invalid, kept in audit_outbox_quarantine",
            outbox.quarantined.clone(),
        );
        metrics.register(
            "audit_outbox_delivered",
            "Audit events this process delivered to audit-svc",
            outbox.delivered.clone(),
        );
        metrics.register(
            "audit_outbox_delivery_failures",
            "Delivery attempts that failed and will be retried (audit-svc or the database down)",
            outbox.delivery_failures.clone(),
        );
        let gauges = outbox.clone();
        metrics.refresh_on_scrape(move || {
            let (gauges, pool) = (gauges.clone(), pool.clone());
            async move { gauges.refresh(&pool).await }
        });
        outbox
    }

    /// Reads the backlog and the quarantine; on failure the gauges keep their last values.
    async fn refresh(&self, pool: &PgPool) {
        match health(pool).await {
            Ok(state) => {
                self.pending.set(state.pending);
                self.oldest_pending_seconds
                    .set(state.oldest_pending_seconds.unwrap_or(0));
                self.quarantined.set(state.quarantined);
            }
            Err(error) => tracing::debug!(%error, "cannot read the outbox for its metrics"),
        }
    }

    pub(crate) fn delivered(&self, events: usize) {
        self.delivered
            .inc_by(u64::try_from(events).unwrap_or(u64::MAX));
    }

    pub(crate) fn delivery_failed(&self) {
        self.delivery_failures.inc();
    }
}
