//! auth-svc: see the crate README and the design, `shared/DESIGN.md`.
//!
//! The service is this library; the binary only loads config and calls [`run`], and tests
//! call the same [`run`] on `127.0.0.1:0`.

pub mod config;
pub mod token_vault;

mod api;
mod app_secret;
mod apps;
mod audit_events;
mod browser_binding;
mod callback;
mod connect;
mod connections;
mod context;
mod deauthorize_retry;
mod domain;
mod error;
mod key_rotation;
mod lease_cache;
mod leases;
mod metrics;
mod offboarding;
mod paging;
mod refresh;
mod revocation;
mod store;
mod usage;
mod wire_region;

use std::sync::Arc;
use std::time::Duration;

pub use service_runtime::Options;
use service_runtime::database::connect_and_migrate;
use service_runtime::health::{DependencyCheck, PostgresCheck};
use service_runtime::metrics::Metrics;
use service_runtime::server::{ServerParts, serve};
use service_runtime::{AccessPolicy, Background, CancellationToken, Role};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use audit_outbox::Relay;
use clio_api::ClioClient;
use proto::auth::v1::auth_service_server::AuthServiceServer;

use crate::api::Api;
use crate::context::Context;
use crate::token_vault::TokenVault;
use crate::usage::UsageRecorder;
use audit_outbox::OutboxDenials;

pub use config::Config;

/// Full gRPC name of `AuthService`, as its generated server names it.
const AUTH_SERVICE: &str = <AuthServiceServer<Api> as NamedService>::NAME;

/// This service's schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which roles may call which RPC.
pub fn access_policy() -> AccessPolicy {
    AccessPolicy::new()
        .allow(AUTH_SERVICE, "RegisterApp", &[Role::Operator])
        .allow(AUTH_SERVICE, "ApproveApp", &[Role::Compliance])
        .allow(AUTH_SERVICE, "RejectApp", &[Role::Compliance])
        .allow(
            AUTH_SERVICE,
            "GetApp",
            &[Role::Operator, Role::Compliance, Role::Connector],
        )
        .allow(
            AUTH_SERVICE,
            "ListApps",
            &[Role::Operator, Role::Compliance, Role::Connector],
        )
        .allow(AUTH_SERVICE, "UpdateAppScopes", &[Role::Operator])
        .allow(AUTH_SERVICE, "ReplaceAppSecret", &[Role::Operator])
        .allow(AUTH_SERVICE, "StartAuthorization", &[Role::Connector])
        .allow(AUTH_SERVICE, "CompleteAuthorization", &[Role::Connector])
        .allow(
            AUTH_SERVICE,
            "GetConnection",
            &[
                Role::Operator,
                Role::Compliance,
                Role::Connector,
                Role::Import,
            ],
        )
        .allow(
            AUTH_SERVICE,
            "ListConnections",
            // import: a billing approver's own connection, to check they see a matter.
            &[
                Role::Operator,
                Role::Compliance,
                Role::Connector,
                Role::Import,
            ],
        )
        .allow(AUTH_SERVICE, "LeaseAccessToken", &[Role::Import])
        .allow(AUTH_SERVICE, "RevokeConnection", &[Role::Operator])
        .allow(AUTH_SERVICE, "OffboardUser", &[Role::Operator])
        .allow(AUTH_SERVICE, "RevokeApp", &[Role::Operator])
        .allow(AUTH_SERVICE, "RotateEncryptionKey", &[Role::Operator])
        // The web flow's callback: the single-use state authorizes it, not a credential.
        .public(callback::CALLBACK_PATH)
        .public(browser_binding::START_PATH)
        // Counts of pending and quarantined audit events, nothing else (like /metrics).
        .public(audit_outbox::HEALTH_PATH)
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, listener, shutdown, Options::default()).await
}

/// [`run`] with [`Options`].
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    options: Options,
) -> anyhow::Result<()> {
    let pool = connect_and_migrate(&config.service.database, &MIGRATOR).await?;
    let vault = Arc::new(vault_of(&config)?);
    key_rotation::prepare(&pool, &vault).await?;
    let metrics = Metrics::new("auth_svc");
    let auth_metrics = metrics::AuthMetrics::registered(&metrics);
    let clio = ClioClient::new(config.clio.regions.clone(), config.clio.http_settings())?
        .with_observer(auth_metrics.clio_observer());
    // Stopped after the server, in this order: the loops that write events, then the
    // relay that delivers them (service_runtime::background).
    let workers = Background::new("auth-svc workers");
    let delivery = Background::new("auth-svc audit delivery");

    let relay = Relay::from_config(pool.clone(), &config.audit)?.map(|r| r.with_metrics(&metrics));
    let waker = relay.as_ref().map(Relay::waker).unwrap_or_default();
    if let Some(relay) = relay {
        delivery.spawn(relay.run(delivery.token()));
    }

    let config = Arc::new(config);
    let ctx = Context {
        pool: pool.clone(),
        vault,
        clio,
        clock: options.clock.clone(),
        config: config.clone(),
        outbox: waker.clone(),
        usage: UsageRecorder::default(),
        lease_cache: lease_cache::LeaseCache::default(),
        refreshes: refresh::RefreshFlights::default(),
        rotation: key_rotation::RotationMetrics::registered(&metrics),
        metrics: auth_metrics,
    };
    workers.spawn(refresh::run_proactive(ctx.clone(), workers.token()));
    workers.spawn(deauthorize_retry::run(ctx.clone(), workers.token()));
    workers.spawn(key_rotation::run_sync(ctx.clone(), workers.token()));
    // Writes its last window when told to stop.
    workers.spawn(ctx.usage.clone().run(
        pool.clone(),
        Duration::from_millis(config.leases.usage_flush_ms),
        waker.clone(),
        workers.token(),
    ));

    let denials = OutboxDenials::start(
        pool.clone(),
        audit_events::SOURCE,
        config.audit.platform_tenant.clone(),
        Some(waker),
        options.clock,
    );
    let routes = Routes::new(AuthServiceServer::new(Api { ctx: ctx.clone() }));
    let checks: Vec<Arc<dyn DependencyCheck>> = vec![Arc::new(PostgresCheck(pool.clone()))];
    let parts = ServerParts {
        routes,
        http: callback::router(ctx).merge(audit_outbox::health_router(pool.clone())),
        policy: access_policy(),
        health_services: vec![AUTH_SERVICE.to_owned()],
        checks,
        metrics,
        denials: Some(Arc::new(denials)),
    };
    let served = serve(&config.service, parts, listener, shutdown).await;
    workers.stop().await;
    delivery.stop().await;
    pool.close().await;
    served
}

/// The vault from the configured keys; a development config without keys gets a
/// process-local key (validation refuses such a config, so only in-process runs see it).
fn vault_of(config: &Config) -> anyhow::Result<TokenVault> {
    if config.keys.is_empty() {
        tracing::warn!(
            "no encryption keys configured: using an ephemeral key; stored secrets will be unreadable after a restart"
        );
        return Ok(TokenVault::ephemeral());
    }
    let keys = config
        .keys
        .iter()
        .enumerate()
        .map(|(i, key)| Ok((key.id.clone(), key.material(i)?)))
        .collect::<Result<Vec<_>, service_runtime::ConfigError>>()?;
    Ok(TokenVault::new(keys, &config.active_key_id)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every RPC auth-svc serves has a policy entry (else every call is refused), and the
    /// policy names no RPC the contracts do not declare (a typo, a renamed RPC).
    #[test]
    fn the_access_policy_names_exactly_the_rpcs_served() {
        let named: BTreeSet<String> = access_policy().methods().map(str::to_owned).collect();
        assert_eq!(named, harness::declared_rpc_paths(&[AUTH_SERVICE]));
    }
}
