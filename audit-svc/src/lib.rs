//! audit-svc: see the crate README and the design, `shared/DESIGN.md`.
//!
//! The service is this library; the binary only loads config and calls [`run`], and tests
//! call the same [`run`] on `127.0.0.1:0`.

pub(crate) mod api;
pub mod append;
pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub(crate) mod denials;
pub(crate) mod error;
pub mod event;
pub mod export;
pub mod metrics;
pub mod projections;
pub(crate) mod query;
pub(crate) mod record_spans;
pub(crate) mod reports;
pub(crate) mod review;
pub mod signing;
pub mod store;
pub mod stored_chain;
pub mod validation;
pub(crate) mod verify;
pub(crate) mod watch;
pub mod witness;

use std::sync::Arc;
use std::time::Duration;

pub use service_runtime::Options;
use service_runtime::health::{DependencyCheck, PostgresCheck};
use service_runtime::metrics::Metrics;
use service_runtime::server::{ServerParts, serve};
use service_runtime::{AccessPolicy, Background, CancellationToken, Role};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use proto::audit::v1::audit_service_server::AuditServiceServer;
use proto::audit::v1::compliance_service_server::ComplianceServiceServer;

use crate::api::Api;
use crate::append::Appender;
use crate::metrics::AuditMetrics;
use crate::signing::{Signer, TrustedKeys};
use crate::watch::Notifier;

pub use config::Config;

/// Full gRPC name of `AuditService`, as its generated server names it.
const AUDIT_SERVICE: &str = <AuditServiceServer<Api> as NamedService>::NAME;
/// Full gRPC name of `ComplianceService`, as its generated server names it.
const COMPLIANCE_SERVICE: &str = <ComplianceServiceServer<Api> as NamedService>::NAME;

/// This service's schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which roles may call which RPC.
pub fn access_policy() -> AccessPolicy {
    AccessPolicy::new()
        .allow(AUDIT_SERVICE, "Record", &[Role::AuditWriter])
        .allow(AUDIT_SERVICE, "Query", &[Role::Compliance])
        .allow(AUDIT_SERVICE, "Watch", &[Role::Compliance])
        .allow(AUDIT_SERVICE, "Verify", &[Role::Compliance])
        .allow(AUDIT_SERVICE, "Export", &[Role::Compliance])
        .allow(
            COMPLIANCE_SERVICE,
            "ConnectionsByRiskTier",
            &[Role::Compliance],
        )
        .allow(COMPLIANCE_SERVICE, "FullAccessApps", &[Role::Compliance])
        .allow(
            COMPLIANCE_SERVICE,
            "WriteCapableConnections",
            &[Role::Compliance],
        )
        .allow(COMPLIANCE_SERVICE, "ZombieConnections", &[Role::Compliance])
        .allow(COMPLIANCE_SERVICE, "OffboardingReport", &[Role::Compliance])
        .allow(COMPLIANCE_SERVICE, "ScopeDriftReport", &[Role::Compliance])
        .allow(
            COMPLIANCE_SERVICE,
            "SharedLoginSuspicions",
            &[Role::Compliance],
        )
        .allow(
            COMPLIANCE_SERVICE,
            "GenerateQuarterlyReview",
            &[Role::Compliance],
        )
        .allow(
            COMPLIANCE_SERVICE,
            "GetQuarterlyReview",
            &[Role::Compliance],
        )
        .allow(COMPLIANCE_SERVICE, "AttestReview", &[Role::Compliance])
        .allow(
            COMPLIANCE_SERVICE,
            "ExportQuarterlyReview",
            &[Role::Compliance],
        )
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, listener, shutdown, Options::default()).await
}

/// [`run`] with [`Options`] (tests move the clock for idle ages and recorded times).
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    options: Options,
) -> anyhow::Result<()> {
    let clock = options.clock;
    let (signer, keys) = signer_and_keys(&config)?;

    // A configured witness that cannot be written stops start-up.
    let witness = match &config.checkpoints.witness_file {
        Some(path) => Some(Arc::new(witness::Witness::open(path.clone()).await?)),
        None => None,
    };

    // Migrates with the migration login and rebuilds the projections if they cannot be
    // trusted, then opens the service login's pool (store::open).
    let pool = store::open(&config).await?;

    // Stopped after the server (service_runtime::background).
    let workers = Background::new("audit-svc workers");
    let notifier = start_workers(&config, &pool, &signer, &clock, witness, &workers);

    let metrics = Metrics::new("audit_svc");
    let appender = Appender {
        pool: pool.clone(),
        signer,
        clock: clock.clone(),
        checkpoint_every: config.checkpoints.every_events,
        metrics: AuditMetrics::registered(&metrics, pool.clone()),
    };
    let denials = Arc::new(denials::AppendDenials::start(
        appender.clone(),
        config.platform_tenant.clone(),
        clock.clone(),
    ));
    let config = Arc::new(config);
    let api = Api {
        metrics: appender.metrics.clone(),
        denials: denials.clone(),
        pool: pool.clone(),
        appender,
        keys: Arc::new(keys),
        notifier,
        clock,
        config: config.clone(),
        // Watch streams end as soon as shutdown starts, so they never hold the drain.
        shutdown: shutdown.clone(),
    };
    let routes = Routes::new(AuditServiceServer::new(api.clone()))
        .add_service(ComplianceServiceServer::new(api));
    let checks: Vec<Arc<dyn DependencyCheck>> = vec![Arc::new(PostgresCheck(pool.clone()))];
    let parts = ServerParts {
        routes,
        http: axum::Router::new(),
        policy: access_policy(),
        health_services: vec![AUDIT_SERVICE.to_owned(), COMPLIANCE_SERVICE.to_owned()],
        checks,
        metrics,
        denials: Some(denials),
    };
    let served = serve(&config.service, parts, listener, shutdown).await;
    workers.stop().await;
    pool.close().await;
    served
}

/// Starts the periodic checkpoint signer and, when one is configured, the witness on
/// `workers`. Returns the notifier of committed appends.
fn start_workers(
    config: &Config,
    pool: &sqlx::PgPool,
    signer: &Arc<Signer>,
    clock: &service_runtime::clock::SharedClock,
    witness: Option<Arc<witness::Witness>>,
    workers: &Background,
) -> Notifier {
    let notifier = Notifier::start(pool.clone(), workers.token());
    workers.spawn(checkpoint::run_periodic(
        pool.clone(),
        signer.clone(),
        clock.clone(),
        Duration::from_millis(config.checkpoints.interval_ms),
        workers.token(),
    ));
    if let Some(witness) = witness {
        workers.spawn(witness::run(
            witness,
            pool.clone(),
            notifier.subscribe(),
            Duration::from_millis(config.checkpoints.interval_ms),
            workers.token(),
        ));
    }
    notifier
}

/// The key checkpoints are signed with, and the public keys they are verified against
/// (the configured trusted ones and the signer's own).
fn signer_and_keys(config: &Config) -> anyhow::Result<(Arc<Signer>, TrustedKeys)> {
    let signer = Arc::new(match Signer::from_config(&config.signing)? {
        Some(signer) => signer,
        None => {
            let signer = Signer::ephemeral();
            tracing::warn!(
                key_id = signer.key_id(),
                "no signing key configured: checkpoints are signed with an ephemeral key that \
                 dies with this process (set signing.key for anything but tests)"
            );
            signer
        }
    });
    let mut keys = TrustedKeys::parse(&config.signing.trusted_public_keys)?;
    keys.add(signer.public_key());
    Ok((signer, keys))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every RPC audit-svc serves has a policy entry (else every call is refused), and the
    /// policy names no RPC the contracts do not declare (a typo, a renamed RPC).
    #[test]
    fn the_access_policy_names_exactly_the_rpcs_served() {
        let named: BTreeSet<String> = access_policy().methods().map(str::to_owned).collect();
        assert_eq!(
            named,
            harness::declared_rpc_paths(&[AUDIT_SERVICE, COMPLIANCE_SERVICE])
        );
    }
}
