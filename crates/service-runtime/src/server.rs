//! Serves a service's gRPC routes, health, reflection and HTTP endpoints on one listener.
//!
//! gRPC (HTTP/2) and plain HTTP/1.1 (`/metrics`, OAuth callbacks) share the port, so a
//! service is reached through one address and `run(config, listener, shutdown)` needs one
//! listener. Every gRPC call gets a span in its caller's trace (`trace_context`), is counted
//! and timed (`rpc_metrics`), then passes the caller-auth layer.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::caller_auth::{AccessPolicy, CallerAuthLayer, DenialSink, LogDenials};
use crate::config::{ConfigError, ServiceConfig};
use crate::health::{DependencyCheck, HealthMonitor};
use crate::metrics::Metrics;
use crate::rpc_metrics::RpcMetricsLayer;

/// Everything a service hands to the shared server.
pub struct ServerParts {
    /// The service's own gRPC services.
    pub routes: Routes,
    /// Extra HTTP routes (e.g. the OAuth callback). Their paths must be declared public
    /// in `policy` or they are refused like an unknown RPC.
    pub http: axum::Router,
    pub policy: AccessPolicy,
    /// Full names of the gRPC services whose health is reported.
    pub health_services: Vec<String>,
    pub checks: Vec<Arc<dyn DependencyCheck>>,
    pub metrics: Metrics,
    pub denials: Option<Arc<dyn DenialSink>>,
}

/// Serves until `shutdown` is cancelled, then drains in-flight calls.
pub async fn serve(
    config: &ServiceConfig,
    parts: ServerParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // TLS first: a bad certificate must fail start-up before any task is spawned.
    let builder = server_builder(config)?;

    let (health_service, health_stop, health_task) =
        start_health(config, parts.health_services.clone(), parts.checks).await;

    let routes = with_reflection(
        parts.routes.add_service(health_service),
        &parts.health_services,
    )?;
    let router = routes
        .into_axum_router()
        .merge(parts.metrics.router())
        .merge(parts.http);

    // Only declared RPCs get a label of their own; the policy declares them.
    let red = RpcMetricsLayer::new(parts.metrics.rpc(), parts.policy.methods());
    let auth = CallerAuthLayer::new(
        &config.callers,
        parts.policy,
        parts.denials.unwrap_or_else(|| Arc::new(LogDenials)),
        parts.metrics.rpc(),
    );

    let address = listener.local_addr()?;
    tracing::info!(%address, "serving gRPC and HTTP");
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let signal = drain_signal(shutdown.clone(), health_stop, health_task);
    let server = builder
        .layer(crate::trace_context::ServerTraceLayer)
        // Outside caller auth, so the calls it refuses are counted too.
        .layer(red)
        .layer(auth)
        .layer(crate::decode_errors::DecodeErrorsLayer)
        .add_routes(Routes::from(router))
        // The builder's tcp_nodelay only reaches sockets tonic binds itself; accepted ones
        // need it here, or Nagle holds small responses back for a delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);

    // A call that never finishes must not hold the process past the grace period.
    tokio::select! {
        result = server => result?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "in-flight calls did not finish in time");
        }
    }
    Ok(())
}

/// The tonic server builder, with the service's TLS if it has one.
fn server_builder(config: &ServiceConfig) -> anyhow::Result<tonic::transport::Server> {
    let mut builder = tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(crate::tls::server_tls(tls)?)
            .map_err(|e| {
                ConfigError::invalid(
                    "service.tls",
                    format!("unusable ({})", crate::tls::cause_of(&e)),
                )
            })?;
    }
    Ok(builder)
}

/// Reports every service NOT_SERVING, then starts the health monitor. Returns the health
/// service, the token that stops the monitor and the monitor's task.
async fn start_health(
    config: &ServiceConfig,
    services: Vec<String>,
    checks: Vec<Arc<dyn DependencyCheck>>,
) -> (HealthServer<impl Health>, CancellationToken, JoinHandle<()>) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let monitor = HealthMonitor::new(
        reporter,
        services,
        checks,
        Duration::from_millis(config.health_interval_ms),
    );
    monitor.start_not_serving().await;
    // The monitor stops (and reports NOT_SERVING) before the listener closes.
    let health_stop = CancellationToken::new();
    let health_task = tokio::spawn(monitor.run(health_stop.clone()));
    (health_service, health_stop, health_task)
}

/// `routes` with reflection (v1 and v1alpha) listing what this process serves.
fn with_reflection(routes: Routes, health_services: &[String]) -> anyhow::Result<Routes> {
    // The descriptor set holds every clio-connect contract; list only what this process
    // actually serves.
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection versions' own files in both servers: a client on v1alpha
            // (grpcio-reflection, older grpcurl) may ask for the v1 service it is listed.
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection");
        // with_service_name switches the listing to the named services only.
        for service in health_services {
            builder = builder.with_service_name(service.clone());
        }
        builder
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    Ok(routes
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// Resolves once `shutdown` is cancelled and the health monitor has stopped: the server
/// then stops accepting and drains.
async fn drain_signal(
    shutdown: CancellationToken,
    health_stop: CancellationToken,
    health_task: JoinHandle<()>,
) {
    shutdown.cancelled().await;
    health_stop.cancel();
    // Health has gone NOT_SERVING; now stop accepting and drain.
    let _ = health_task.await;
    tracing::info!("draining in-flight calls");
}
