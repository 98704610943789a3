//! Starting each service in-process on `127.0.0.1:0` with its own fresh database.

use std::net::SocketAddr;

use harness::{SpawnedService, TestDatabase};
use proto::audit::v1::{audit_service_server, compliance_service_server};
use proto::auth::v1::auth_service_server;
use proto::imports::v1::import_service_server;
use secrecy::SecretString;
use service_runtime::CancellationToken;
use service_runtime::config::ServiceConfig;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Import,
    Audit,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Auth, Service::Import, Service::Audit];

    pub fn binary(self) -> &'static str {
        match self {
            Service::Auth => "auth-svc",
            Service::Import => "import-svc",
            Service::Audit => "audit-svc",
        }
    }

    pub fn env_prefix(self) -> &'static str {
        match self {
            Service::Auth => "AUTH_SVC_",
            Service::Import => "IMPORT_SVC_",
            Service::Audit => "AUDIT_SVC_",
        }
    }

    /// The gRPC services it must list through reflection and report health for.
    pub fn grpc_services(self) -> &'static [&'static str] {
        match self {
            Service::Auth => &[auth_service_server::SERVICE_NAME],
            Service::Import => &[import_service_server::SERVICE_NAME],
            Service::Audit => &[
                audit_service_server::SERVICE_NAME,
                compliance_service_server::SERVICE_NAME,
            ],
        }
    }
}

/// A service running in this test process. Stop it with [`Running::stop`].
pub struct Running {
    pub address: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub database: TestDatabase,
}

impl Running {
    /// Stops the service gracefully, then drops its database.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let outcome = self.task.await?;
        drop(self.database);
        outcome
    }
}

/// The shared part of every test service's config: test callers, fast health checks.
pub fn test_service_config(database_url: SecretString) -> ServiceConfig {
    let mut service = ServiceConfig {
        callers: harness::caller_config(),
        health_interval_ms: 100,
        shutdown_grace_ms: 2_000,
        ..ServiceConfig::default()
    };
    service.database.url = database_url;
    service
}

/// audit-svc's writer grants for the test credentials of auth-svc (`auth_writer`) and
/// import-svc (`import_writer`), the ones the stacks configure them with.
pub fn test_writers() -> Vec<audit_svc::config::WriterGrant> {
    use audit_svc::config::WriterGrant;
    vec![
        WriterGrant::auth_svc("auth_writer"),
        WriterGrant::import_svc("import_writer"),
    ]
}

pub async fn start(kind: Service) -> Running {
    let database = TestDatabase::create().await;
    start_with_database_url(kind, database, None).await
}

/// Starts `kind` whose database is reached through `url` (e.g. a cut-able proxy) instead
/// of directly; `database` is still the one dropped at the end.
pub async fn start_with_database_url(
    kind: Service,
    database: TestDatabase,
    url: Option<String>,
) -> Running {
    let service = test_service_config(SecretString::from(
        url.unwrap_or_else(|| database.url.clone()),
    ));
    start_with_config(kind, database, service).await
}

/// Starts `kind` with a shared config the test has adjusted (e.g. TLS settings);
/// `database` is the one dropped at the end.
#[allow(
    clippy::needless_update,
    reason = "each service's Config grows its own settings"
)]
pub async fn start_with_config(
    kind: Service,
    database: TestDatabase,
    service: ServiceConfig,
) -> Running {
    // Not waited for: tests here watch a service come up, or fail to.
    let SpawnedService {
        address,
        shutdown,
        task,
    } = SpawnedService::start(|listener, token| async move {
        match kind {
            Service::Auth => {
                let config = auth_svc::Config {
                    service,
                    ..Default::default()
                };
                auth_svc::run(config, listener, token).await
            }
            Service::Import => {
                let config = import_svc::Config {
                    service,
                    ..Default::default()
                };
                import_svc::run(config, listener, token).await
            }
            Service::Audit => {
                let config = audit_svc::Config {
                    service,
                    writers: test_writers(),
                    ..Default::default()
                };
                audit_svc::run(config, listener, token).await
            }
        }
    })
    .await;
    Running {
        address,
        shutdown,
        task,
        database,
    }
}
