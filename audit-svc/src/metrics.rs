//! What audit-svc reports at `/metrics` beside the shared gRPC families: events appended
//! (by kind) and duplicates absorbed, the chains' heads, and `Verify` verdicts.
//!
//! The chain gauges are read from `chain_heads` when Prometheus scrapes, so every replica
//! reports the same, exact heads. Chains are per tenant and a tenant is an id, so the
//! gauges add the chains up rather than label them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use service_runtime::metrics::Metrics;
use sqlx::PgPool;

use crate::event::{EventRecord, kind_from_name};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// audit-svc's own families; counted into nothing until [`AuditMetrics::registered`].
#[derive(Clone, Default)]
pub struct AuditMetrics {
    appended: Family<KindLabels, Counter>,
    duplicates: Counter,
    verifications: Family<VerdictLabels, Counter>,
}

/// The chains' heads, summed over tenants.
#[derive(Clone, Default)]
struct ChainGauges {
    events: Gauge,
    chains: Gauge,
    uncheckpointed: Gauge,
}

impl AuditMetrics {
    /// Registers audit-svc's families in `metrics`, the chain gauges read from `pool`.
    pub fn registered(metrics: &Metrics, pool: PgPool) -> AuditMetrics {
        let audit = AuditMetrics::default();
        metrics.register(
            "events_appended",
            "Audit events appended to a chain, by kind",
            audit.appended.clone(),
        );
        metrics.register(
            "events_duplicate",
            "Audit events sent again and absorbed by event id (already in the chain)",
            audit.duplicates.clone(),
        );
        metrics.register(
            "chain_verifications",
            "Verify calls by verdict: intact, or broken (someone must look)",
            audit.verifications.clone(),
        );
        let chain = ChainGauges::default();
        metrics.register(
            "chain_events",
            "Events in every tenant's chain: the sum of the chain heads' sequence numbers",
            chain.events.clone(),
        );
        metrics.register("chains", "Tenants with a chain", chain.chains.clone());
        metrics.register(
            "chain_uncheckpointed_events",
            "Events past their chain's last signed checkpoint, over all chains",
            chain.uncheckpointed.clone(),
        );
        metrics.refresh_on_scrape(move || {
            let (chain, pool) = (chain.clone(), pool.clone());
            async move { chain.refresh(&pool).await }
        });
        // Both verdicts exist from the start at 0, so an alert on `broken` has a series.
        for verdict in ["intact", "broken"] {
            audit
                .verifications
                .get_or_create(&VerdictLabels { verdict })
                .inc_by(0);
        }
        audit
    }

    /// Events an append stored (`fresh`) and how many it found already recorded.
    pub fn appended(&self, fresh: &[EventRecord], duplicates: u32) {
        for record in fresh {
            let kind = kind_from_name(&record.body.kind).as_str_name();
            let kind = kind.strip_prefix("EVENT_KIND_").unwrap_or(kind);
            self.appended.get_or_create(&KindLabels { kind }).inc();
        }
        self.duplicates.inc_by(u64::from(duplicates));
    }

    /// A `Verify` verdict.
    pub fn verified(&self, intact: bool) {
        let verdict = if intact { "intact" } else { "broken" };
        self.verifications
            .get_or_create(&VerdictLabels { verdict })
            .inc();
    }
}

impl ChainGauges {
    /// Reads the heads; on failure the gauges keep their last values.
    async fn refresh(&self, pool: &PgPool) {
        let heads: Result<(i64, i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT coalesce(sum(last_sequence), 0)::bigint, count(*), \
                    coalesce(sum(last_sequence - checkpointed_sequence), 0)::bigint \
             FROM chain_heads",
        )
        .fetch_one(pool)
        .await;
        match heads {
            Ok((events, chains, uncheckpointed)) => {
                self.events.set(events);
                self.chains.set(chains);
                self.uncheckpointed.set(uncheckpointed);
            }
            Err(error) => tracing::debug!(%error, "cannot read the chain heads for metrics"),
        }
    }
}
