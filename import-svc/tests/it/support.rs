//! Starting import-svc for a test: its own database, its own queue names, and (when the
//! test needs one) an auth-svc endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use harness::{
    AmqpMessage, ServingStatus, SpawnedService, TestBroker, TestDatabase, channel, health_status,
    poll_until, spawn_service,
};
use import_svc::Config;
use import_svc::queue::topology::Topology;
use proto::queue::{JOB_ROUTING_KEY, header};
use secrecy::SecretString;
use service_runtime::config::ServiceConfig;

/// The platform tenant the tests configure (events whose firm is unknown).
pub const PLATFORM_TENANT: &str = "platform-test";

pub struct RunningImport {
    pub address: SocketAddr,
    pub topology: Topology,
    pub database: TestDatabase,
    pub broker: TestBroker,
    service: SpawnedService,
}

/// What a test may change before the service starts.
pub struct Setup {
    pub amqp_url: Option<String>,
    pub auth_endpoint: String,
    pub auth_token: String,
    /// audit-svc's address and import-svc's credential there; `None`: no relay runs and
    /// events stay in the outbox.
    pub audit: Option<(String, String)>,
    /// Any other change to the config before the service starts.
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Setup {
    fn default() -> Self {
        // Nothing listens on port 1: tests that never reach auth-svc use this.
        Setup {
            amqp_url: None,
            auth_endpoint: "http://127.0.0.1:1".into(),
            auth_token: String::new(),
            audit: None,
            tweak: Box::new(|_| {}),
        }
    }
}

pub async fn start(test: &str, setup: Setup) -> RunningImport {
    let database = TestDatabase::create().await;
    let mut broker = TestBroker::connect(test).await;
    let topology = Topology::new(&broker.prefix);
    let queues = topology.all_queues();
    let exchanges = topology.all_exchanges();
    broker.track(
        &queues.iter().map(String::as_str).collect::<Vec<_>>(),
        &exchanges.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut config = Config {
        service: ServiceConfig {
            callers: harness::caller_config(),
            health_interval_ms: 100,
            shutdown_grace_ms: 3_000,
            ..ServiceConfig::default()
        },
        ..Config::default()
    };
    config.service.database.url = database.secret_url();
    config.amqp.url = SecretString::from(setup.amqp_url.unwrap_or_else(harness::amqp_url));
    config.amqp.prefix = broker.prefix.clone();
    config.amqp.reconnect_delay_ms = 200;
    config.auth.endpoint = setup.auth_endpoint;
    config.auth.token = Some(SecretString::from(setup.auth_token));
    config.importer.backoff_base_ms = 20;
    config.audit.platform_tenant = PLATFORM_TENANT.into();
    if let Some((endpoint, token)) = setup.audit {
        config.audit.endpoint = endpoint;
        config.audit.token = Some(SecretString::from(token));
        config.audit.poll_interval_ms = 100;
    }
    (setup.tweak)(&mut config);

    let service =
        spawn_service(|listener, shutdown| import_svc::run(config, listener, shutdown)).await;
    RunningImport {
        address: service.address,
        topology,
        database,
        broker,
        service,
    }
}

impl RunningImport {
    pub async fn wait_health(&self, wanted: ServingStatus) {
        poll_until(
            &format!("import-svc {wanted:?}"),
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                let status = health_status(channel(self.address).await, "").await.ok()?;
                (status == wanted).then_some(())
            },
        )
        .await;
    }

    /// Publishes a job message as a producer would, with its content type (if any).
    pub async fn publish_job(&self, body: &[u8], content_type: Option<&str>) {
        self.broker
            .publish(
                &self.topology.names.jobs_exchange,
                JOB_ROUTING_KEY,
                body,
                content_type,
            )
            .await;
    }

    /// The next message parked in the dead-letter queue, and the reason it was refused.
    pub async fn next_dead_letter(&self) -> (AmqpMessage, String) {
        let dead = self
            .broker
            .next_message(
                &self.topology.names.dead_letter_queue,
                Duration::from_secs(10),
            )
            .await;
        let reason = dead
            .header(header::REJECTION_REASON)
            .expect("a dead letter carries its reason");
        (dead, reason)
    }

    pub async fn job_status(&self, job_id: &str) -> Option<String> {
        let mut db = self.database.connect().await;
        sqlx::query_scalar("SELECT status FROM jobs WHERE job_id = $1::uuid")
            .bind(job_id)
            .fetch_optional(&mut db)
            .await
            .unwrap()
    }

    /// The job's status once the job is recorded. A refused message is parked in the
    /// dead-letter queue before its job row commits (so nothing is lost if the commit
    /// fails), so a test that has just read the dead letter waits for the row.
    pub async fn recorded_status(&self, job_id: &str) -> String {
        poll_until(
            "the job's row",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || self.job_status(job_id),
        )
        .await
    }

    pub async fn stop(self) {
        self.service.stop().await.unwrap();
    }

    /// Stops the service but keeps its queues. Once its channel is closed, every message
    /// it had taken but not settled is back in the queue, visible to `basic_get`.
    pub async fn stop_keeping_broker(self) -> (TestBroker, Topology) {
        self.service.stop().await.unwrap();
        (self.broker, self.topology)
    }
}
