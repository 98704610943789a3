//! gRPC health driven by dependency checks: SERVING only while every dependency
//! (Postgres, RabbitMQ, ...) answers, NOT_SERVING as soon as one does not or shutdown starts.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// One dependency a service needs to do its work.
pub trait DependencyCheck: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// `Err` carries a short, secret-free reason.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Postgres answers `SELECT 1`.
pub struct PostgresCheck(pub sqlx::PgPool);

impl DependencyCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Keeps the health of `services` (and the overall "" entry) in step with `checks`.
pub struct HealthMonitor {
    reporter: HealthReporter,
    services: Vec<String>,
    checks: Vec<Arc<dyn DependencyCheck>>,
    interval: Duration,
}

impl HealthMonitor {
    pub fn new(
        reporter: HealthReporter,
        services: Vec<String>,
        checks: Vec<Arc<dyn DependencyCheck>>,
        interval: Duration,
    ) -> Self {
        HealthMonitor {
            reporter,
            services,
            checks,
            interval,
        }
    }

    /// Reports NOT_SERVING until the first check passes (tonic-health starts the overall
    /// entry as SERVING, which would let callers in before the dependencies are known).
    pub async fn start_not_serving(&self) {
        self.set_all(ServingStatus::NotServing).await;
    }

    /// Checks now and then every interval until `shutdown`, when everything turns
    /// NOT_SERVING so load balancers drain the instance first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last = None;
        loop {
            let status = self.probe().await;
            if last != Some(status) {
                tracing::info!(?status, "health changed");
                self.set_all(status).await;
                last = Some(status);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
        self.set_all(ServingStatus::NotServing).await;
    }

    async fn probe(&self) -> ServingStatus {
        for check in &self.checks {
            let outcome =
                tokio::time::timeout(self.interval.max(Duration::from_secs(1)), check.check())
                    .await;
            let failure = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(reason)) => reason,
                Err(_) => "timed out".to_owned(),
            };
            tracing::warn!(dependency = check.name(), reason = %failure, "dependency check failed");
            return ServingStatus::NotServing;
        }
        ServingStatus::Serving
    }

    async fn set_all(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(service, status).await;
        }
    }
}
