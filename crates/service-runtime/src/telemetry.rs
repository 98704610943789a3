//! Structured logs and distributed traces through `tracing`.
//!
//! Logs: JSON for machines, pretty for people. Traces: every `tracing` span is also an
//! OpenTelemetry span (`tracing-opentelemetry`), so the W3C `traceparent` a request brought
//! is carried on to the calls, messages and audit events it causes
//! ([`crate::trace_context`]). Spans leave the process only when an OTLP endpoint is
//! configured (`service.tracing.otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): then a batch processor sends them over OTLP/gRPC with
//! `service.name` set to the service's name. Without one, spans still get ids (so the
//! context is propagated) and are dropped when they end.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ClientTls, ConfigError, ServiceConfig, http_base_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    #[default]
    Pretty,
}

/// `[service.tracing]`: where spans are exported. Everything is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// An OTLP/gRPC collector (`http://otel-collector:4317`). Unset: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` if set, else
    /// nothing is exported (trace context is still propagated).
    pub otlp_endpoint: Option<String>,
    /// TLS to the collector, for an `https://` endpoint.
    pub tls: Option<ClientTls>,
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            http_base_url("tracing.otlp_endpoint", endpoint)?;
        }
        if let Some(tls) = &self.tls {
            tls.validate("tracing.tls")?;
        }
        Ok(())
    }
}

/// The standard OpenTelemetry variables naming a collector, the traces-only one first.
const OTLP_ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How long the last spans may take to leave at shutdown.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The tracer provider behind the `tracing` layer. Keep it until the service has stopped,
/// then [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Flushes buffered spans to the collector (for at most [`FLUSH_TIMEOUT`]) and stops
    /// the exporter. Must run while the async runtime is alive: the export does.
    pub async fn shutdown(self) {
        if !self.exporting {
            return;
        }
        // The SDK's shutdown blocks until the export finished; off the async workers, and
        // bounded: a collector that is down must not hold the process past its grace.
        let provider = self.provider;
        let flush = move || provider.shutdown_with_timeout(FLUSH_TIMEOUT);
        match tokio::task::spawn_blocking(flush).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot flush the last spans"),
            Err(error) => tracing::warn!(%error, "cannot flush the last spans"),
        }
    }
}

/// Installs the global subscriber for the service `service_name`: logs as `config` says
/// (`RUST_LOG` wins over `config.log_filter`), spans at INFO and above exported as
/// [`TracingConfig`] says. The log filter does not reach the spans: quieter logs must not
/// cut a trace in two. Calling it twice (tests starting several services in one process)
/// keeps the first subscriber.
///
/// Must be called inside the Tokio runtime: the exporter's gRPC channel lives there.
pub fn init(service_name: &'static str, config: &ServiceConfig) -> Result<Telemetry, ConfigError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_target(true);
    let logs = match config.log_format {
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        LogFormat::Pretty => logs.boxed(),
    };
    let (provider, exporting) = tracer_provider(service_name, &config.tracing)?;
    let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    let result = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans.with_filter(LevelFilter::INFO))
        .try_init();
    // An already-installed subscriber is fine: the first one keeps logging.
    drop(result);
    Ok(Telemetry {
        provider,
        exporting,
    })
}

/// The provider: with a batch exporter when a collector is named, else without any (spans
/// are created, propagated and dropped). True when it exports.
fn tracer_provider(
    service_name: &'static str,
    config: &TracingConfig,
) -> Result<(SdkTracerProvider, bool), ConfigError> {
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some((field, endpoint)) = otlp_endpoint(config) else {
        return Ok((builder.build(), false));
    };
    // Our own channel, so TLS to the collector is configured like every other client
    // (a CA file, no public root store) and the setting is named in errors.
    let channel = crate::tls::grpc_endpoint(&field, &endpoint, config.tls.as_ref())
        .map_err(|e| e.within("service"))?
        .connect_lazy();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .build()
        .map_err(|e| ConfigError::invalid(field, e.to_string()))?;
    Ok((builder.with_batch_exporter(exporter).build(), true))
}

/// The collector's endpoint and the setting that named it: the config, else the standard
/// variables (an empty one counts as unset).
fn otlp_endpoint(config: &TracingConfig) -> Option<(String, String)> {
    if let Some(endpoint) = &config.otlp_endpoint {
        return Some(("tracing.otlp_endpoint".to_owned(), endpoint.clone()));
    }
    OTLP_ENDPOINT_VARIABLES.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(|value| ((*name).to_owned(), value))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_endpoint_must_be_an_http_url() {
        let config = TracingConfig {
            otlp_endpoint: Some("collector:4317".into()),
            tls: None,
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("tracing.otlp_endpoint"), "{error}");
        TracingConfig {
            otlp_endpoint: Some("http://collector:4317".into()),
            tls: None,
        }
        .validate()
        .unwrap();
    }

    #[tokio::test]
    async fn https_without_a_ca_is_refused_naming_the_tls_setting() {
        let config = TracingConfig {
            otlp_endpoint: Some("https://collector:4317".into()),
            tls: None,
        };
        let error = tracer_provider("test", &config).unwrap_err().to_string();
        assert!(error.contains("service.tracing.tls.ca_path"), "{error}");
    }

    #[tokio::test]
    async fn without_an_endpoint_nothing_is_exported() {
        let (provider, exporting) = tracer_provider("test", &TracingConfig::default()).unwrap();
        // The variables may be set where the tests run; only then may it export.
        let from_environment = OTLP_ENDPOINT_VARIABLES
            .iter()
            .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
        assert_eq!(exporting, from_environment);
        provider.shutdown().unwrap();
    }
}
