//! The Prometheus registry each service exposes at `GET /metrics`.
//!
//! Label values are method names, outcomes and other bounded enums: never ids, tokens or
//! anything a caller controls.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A service's registry. Clone it freely; it is shared.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    rpc: RpcMetrics,
}

impl Metrics {
    /// A registry whose metric names start with `prefix` (`auth_svc`).
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let rpc = RpcMetrics::default();
        registry.register(
            "rpc_calls",
            "gRPC calls by method and caller-auth outcome",
            rpc.calls.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            rpc,
        }
    }

    /// Registers a service-specific metric.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    pub fn rpc(&self) -> RpcMetrics {
        self.rpc.clone()
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock()
            && let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry)
        {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }

    /// `GET /metrics` for the service's HTTP router.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = metrics.render();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    outcome: &'static str,
}

/// Calls counted by the caller-auth layer.
#[derive(Clone, Default)]
pub struct RpcMetrics {
    calls: Family<RpcLabels, Counter>,
}

impl RpcMetrics {
    pub(crate) fn record(&self, method: &str, outcome: &'static str) {
        self.calls
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                outcome,
            })
            .inc();
    }
}
