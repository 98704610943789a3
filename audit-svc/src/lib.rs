//! audit-svc: see the crate README and `../DESIGN.md`.
//!
//! The service is this library; the binary only loads config and calls [`run`], and tests
//! call the same [`run`] on `127.0.0.1:0`.

pub mod canonical;
pub mod config;
pub mod error;
pub mod event;
pub mod signing;
pub mod validation;

use std::sync::Arc;

use service_runtime::database::connect_and_migrate;
use service_runtime::health::{DependencyCheck, PostgresCheck};
use service_runtime::metrics::Metrics;
use service_runtime::server::{ServerParts, serve};
use service_runtime::{AccessPolicy, CancellationToken, Role};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tonic::service::Routes;

use proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use proto::audit::v1::compliance_service_server::{ComplianceService, ComplianceServiceServer};

pub use config::Config;

/// Full gRPC name of `AuditService`.
pub const AUDIT_AUDIT_SERVICE: &str = "clio_connect.audit.v1.AuditService";
/// Full gRPC name of `ComplianceService`.
pub const AUDIT_COMPLIANCE_SERVICE: &str = "clio_connect.audit.v1.ComplianceService";

/// This service's schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which roles may call which RPC.
pub fn access_policy() -> AccessPolicy {
    AccessPolicy::new()
        .allow(AUDIT_AUDIT_SERVICE, "Record", &[Role::AuditWriter])
        .allow(AUDIT_AUDIT_SERVICE, "Query", &[Role::Compliance])
        .allow(AUDIT_AUDIT_SERVICE, "Watch", &[Role::Compliance])
        .allow(AUDIT_AUDIT_SERVICE, "Verify", &[Role::Compliance])
        .allow(AUDIT_AUDIT_SERVICE, "Export", &[Role::Compliance])
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "ConnectionsByRiskTier",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "FullAccessApps",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "WriteCapableConnections",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "ZombieConnections",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "OffboardingReport",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "ScopeDriftReport",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "SharedLoginSuspicions",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "GenerateQuarterlyReview",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "GetQuarterlyReview",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
            "AttestReview",
            &[Role::Compliance],
        )
        .allow(
            AUDIT_COMPLIANCE_SERVICE,
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
    let pool = connect_and_migrate(&config.service.database, &MIGRATOR).await?;
    let api = Api {
        _pool: pool.clone(),
    };
    let routes = Routes::new(AuditServiceServer::new(api.clone()))
        .add_service(ComplianceServiceServer::new(api.clone()));
    let checks: Vec<Arc<dyn DependencyCheck>> = vec![Arc::new(PostgresCheck(pool.clone()))];
    let parts = ServerParts {
        routes,
        http: axum::Router::new(),
        policy: access_policy(),
        health_services: vec![
            AUDIT_AUDIT_SERVICE.to_owned(),
            AUDIT_COMPLIANCE_SERVICE.to_owned(),
        ],
        checks,
        metrics: Metrics::new("audit_svc"),
        denials: None,
    };
    serve(&config.service, parts, listener, shutdown).await?;
    pool.close().await;
    Ok(())
}

/// The gRPC handlers. RPCs not built yet answer UNIMPLEMENTED (the generated defaults).
#[derive(Clone)]
struct Api {
    _pool: sqlx::PgPool,
}

#[tonic::async_trait]
impl AuditService for Api {}

#[tonic::async_trait]
impl ComplianceService for Api {}
