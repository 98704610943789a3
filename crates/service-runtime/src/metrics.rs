//! The Prometheus registry each service exposes at `GET /metrics`.
//!
//! Every service gets the gRPC RED families ([`crate::rpc_metrics`]); services register
//! their own beside them, and [`DependencyCalls`] for the HTTP dependency they call (Clio).
//! Values that live in a database (an outbox's backlog, a chain's length) are read when
//! Prometheus scrapes ([`Metrics::refresh_on_scrape`]), so they are never staler than
//! the scrape and cost nothing between scrapes.
//!
//! Label values are method names, outcomes and other bounded enums: never ids, tokens or
//! anything a caller controls.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use crate::rpc_metrics::RpcMetrics;
use crate::rpc_metrics::{Histograms, latency_histograms};

/// How long a scrape waits for the values it refreshes (database counts). After that it
/// answers with the last values it has rather than hold the scraper.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

type Refresh = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A service's registry. Clone it freely; it is shared.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    rpc: RpcMetrics,
    refreshes: Arc<Mutex<Vec<Refresh>>>,
}

impl Metrics {
    /// A registry whose metric names start with `prefix` (`auth_svc`).
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let rpc = RpcMetrics::default();
        rpc.register(&mut registry);
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            rpc,
            refreshes: Arc::default(),
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

    /// Runs `refresh` before every scrape is answered (to set gauges from a database).
    /// Refreshes run together and are given [`REFRESH_TIMEOUT`]; one that fails should
    /// log and leave its gauges as they were.
    pub fn refresh_on_scrape<F, Fut>(&self, refresh: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let refresh: Refresh = Arc::new(move || Box::pin(refresh()));
        self.refreshes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(refresh);
    }

    /// Refreshes what is read on scrape, then renders the registry.
    pub async fn scrape(&self) -> String {
        let refreshes: Vec<Refresh> = self
            .refreshes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let all = futures_util::future::join_all(refreshes.iter().map(|refresh| refresh()));
        if tokio::time::timeout(REFRESH_TIMEOUT, all).await.is_err() {
            tracing::warn!(
                timeout_ms = REFRESH_TIMEOUT.as_millis() as u64,
                "metrics read on scrape did not answer in time; serving the last values"
            );
        }
        self.render()
    }

    /// The registry in the Prometheus text format, as it is now.
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
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.scrape().await,
                    )
                }
            }),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyCallLabels {
    endpoint: &'static str,
    class: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// HTTP calls to a dependency (Clio): counted by endpoint and answer, timed by endpoint.
/// The endpoint is a fixed name the caller picks; the answer is a status class and one of
/// a fixed set of codes ([`status_code_label`]), so a dependency cannot grow the registry.
#[derive(Clone)]
pub struct DependencyCalls {
    calls: Family<DependencyCallLabels, Counter>,
    latency: Histograms<EndpointLabels>,
}

impl DependencyCalls {
    /// Registers `<dependency>_calls` and `<dependency>_call_duration_seconds`.
    pub fn registered(metrics: &Metrics, dependency: &str) -> DependencyCalls {
        let calls = DependencyCalls {
            calls: Family::default(),
            latency: latency_histograms(),
        };
        metrics.register(
            &format!("{dependency}_calls"),
            &format!(
                "HTTP calls to {dependency} by endpoint, status class and status code \
                 (class none: no answer, a timeout or a dropped connection)"
            ),
            calls.calls.clone(),
        );
        metrics.register(
            &format!("{dependency}_call_duration_seconds"),
            &format!("Time until {dependency} answered a call, by endpoint"),
            calls.latency.clone(),
        );
        calls
    }

    /// One call to `endpoint`: its HTTP status (`None`: no answer) after `elapsed`.
    pub fn record(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        self.calls
            .get_or_create(&DependencyCallLabels {
                endpoint,
                class: status_class_label(status),
                code: status_code_label(status),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }
}

/// `2xx`..`5xx`, `other` for a status outside 200–599, `none` without an answer.
pub fn status_class_label(status: Option<u16>) -> &'static str {
    match status {
        None => "none",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
    }
}

/// The status itself when it is one a dashboard tells apart, else `other` (the class
/// still says which kind); `none` without an answer.
pub fn status_code_label(status: Option<u16>) -> &'static str {
    match status {
        None => "none",
        Some(200) => "200",
        Some(201) => "201",
        Some(204) => "204",
        Some(400) => "400",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(409) => "409",
        Some(422) => "422",
        Some(429) => "429",
        Some(500) => "500",
        Some(502) => "502",
        Some(503) => "503",
        Some(504) => "504",
        Some(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dependency_answers_map_onto_fixed_labels() {
        assert_eq!(status_class_label(None), "none");
        assert_eq!(status_class_label(Some(429)), "4xx");
        assert_eq!(status_class_label(Some(99)), "other");
        assert_eq!(status_code_label(Some(429)), "429");
        assert_eq!(status_code_label(Some(418)), "other");
        let metrics = Metrics::new("test");
        let clio = DependencyCalls::registered(&metrics, "clio");
        clio.record("contacts", Some(503), Duration::from_millis(3));
        clio.record("contacts", None, Duration::from_secs(30));
        let rendered = metrics.render();
        assert!(
            rendered.contains(
                "test_clio_calls_total{endpoint=\"contacts\",class=\"5xx\",code=\"503\"} 1"
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains("test_clio_call_duration_seconds_count{endpoint=\"contacts\"} 2"),
            "{rendered}"
        );
    }

    #[tokio::test]
    async fn a_scrape_runs_the_refreshes_first() {
        let metrics = Metrics::new("test");
        let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        metrics.register("backlog", "rows waiting", gauge.clone());
        metrics.refresh_on_scrape(move || {
            let gauge = gauge.clone();
            async move {
                gauge.set(42);
            }
        });
        assert!(metrics.render().contains("test_backlog 0"));
        assert!(metrics.scrape().await.contains("test_backlog 42"));
    }
}
