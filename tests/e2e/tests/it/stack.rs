//! The whole platform in one test process: the Clio simulator, audit-svc, auth-svc and
//! import-svc, each on `127.0.0.1:0` with its own database, import-svc on its own queue
//! names. Tests connect a person through the out-of-band flow exactly as a user would, then
//! drive imports through RabbitMQ and gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clio_sim::{ClioSim, Region, SimConfig};
use harness::{
    SpawnedService, TcpProxy, TestBroker, TestDatabase, channel, poll_until, spawn_service,
    token_of, with_bearer,
};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::common::v1::{AuditEvent, EventKind};
use proto::imports::v1 as import;
use proto::imports::v1::import_service_client::ImportServiceClient;
use proto::queue::{self, JOB_ROUTING_KEY, content_type};
use secrecy::SecretString;
use service_runtime::CancellationToken;
use service_runtime::clock::{ManualClock, SharedClock};
use tokio::net::TcpListener;

use crate::services::{test_service_config, test_writers};

/// The credential auth-svc's test caller `import` presents; import-svc uses it.
fn import_token() -> String {
    token_of("import")
}

/// A service started in-process, with the database it owns.
struct Task {
    service: SpawnedService,
    /// Dropped (and so removed) when the task is; import-svc's lives on the stack instead,
    /// because import-svc restarts on the same database.
    database: Option<TestDatabase>,
}

impl Task {
    async fn start<F, Fut>(database: Option<TestDatabase>, run: F) -> Task
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Task {
            service: spawn_service(run).await,
            database,
        }
    }

    fn address(&self) -> SocketAddr {
        self.service.address
    }

    async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// What a test may change about the stack before it starts.
pub struct StackSetup {
    pub sim: SimConfig,
    /// Overrides of import-svc's config (rate-limit reserve, concurrency, ...).
    pub import: Box<dyn FnOnce(&mut import_svc::Config) + Send>,
    /// import-svc reaches auth-svc through a proxy the test can cut ([`Stack::auth_proxy`]).
    pub auth_proxy: bool,
    /// import-svc reaches its database through a proxy the test can cut
    /// ([`Stack::import_db_proxy`]).
    pub import_db_proxy: bool,
    /// import-svc delivers audit events through a proxy the test can cut
    /// ([`Stack::audit_proxy`]).
    pub audit_proxy: bool,
    /// auth-svc delivers audit events through a proxy the test can cut
    /// ([`Stack::auth_audit_proxy`]).
    pub auth_audit_proxy: bool,
}

impl Default for StackSetup {
    fn default() -> Self {
        StackSetup {
            sim: SimConfig {
                regions: vec![Region::Us],
                rate_limit: None,
                ..SimConfig::default()
            },
            import: Box::new(|_| {}),
            auth_proxy: false,
            import_db_proxy: false,
            audit_proxy: false,
            auth_audit_proxy: false,
        }
    }
}

pub struct Stack {
    pub sim: ClioSim,
    pub broker: TestBroker,
    /// The queue names under this stack's prefix.
    pub topology: queue::Names,
    pub import_database: TestDatabase,
    /// import-svc's config as started, for restarting it (in-process or as a process).
    pub import_config: import_svc::Config,
    /// import-svc's clock (retention); starts at the wall-clock time.
    pub import_clock: ManualClock,
    /// Between import-svc and auth-svc, when the setup asked for it.
    pub auth_proxy: Option<TcpProxy>,
    /// Between import-svc and its database, when the setup asked for it.
    pub import_db_proxy: Option<TcpProxy>,
    /// Between import-svc and audit-svc, when the setup asked for it.
    pub audit_proxy: Option<TcpProxy>,
    /// Between auth-svc and audit-svc, when the setup asked for it.
    pub auth_audit_proxy: Option<TcpProxy>,
    import: Option<Task>,
    /// More import-svc replicas on the same database and queues.
    replicas: Vec<Task>,
    auth: Task,
    audit: Task,
}

impl Stack {
    pub async fn start(test: &str, setup: StackSetup) -> Stack {
        let sim = ClioSim::start(setup.sim).await.unwrap();

        let audit_db = TestDatabase::create().await;
        let audit_config = audit_svc::Config {
            service: test_service_config(audit_db.secret_url()),
            writers: test_writers(),
            ..Default::default()
        };
        let audit = Task::start(Some(audit_db), |listener, shutdown| {
            audit_svc::run(audit_config, listener, shutdown)
        })
        .await;

        let auth_db = TestDatabase::create().await;
        let auth_audit_proxy = match setup.auth_audit_proxy {
            true => Some(TcpProxy::start(audit.address()).await),
            false => None,
        };
        let auth_audit = auth_audit_proxy
            .as_ref()
            .map_or(audit.address(), |p| p.address);
        let auth_config = auth_config(&sim, auth_db.secret_url(), auth_audit);
        let auth = Task::start(Some(auth_db), |listener, shutdown| {
            auth_svc::run(auth_config, listener, shutdown)
        })
        .await;

        let mut broker = TestBroker::connect(test).await;
        let import_database = TestDatabase::create().await;
        let import_db_proxy = match setup.import_db_proxy {
            true => Some(TcpProxy::start(import_database.server_address()).await),
            false => None,
        };
        let import_db_url = match &import_db_proxy {
            Some(proxy) => import_database.secret_url_via(proxy.address),
            None => import_database.secret_url(),
        };
        let auth_proxy = match setup.auth_proxy {
            true => Some(TcpProxy::start(auth.address()).await),
            false => None,
        };
        let audit_proxy = match setup.audit_proxy {
            true => Some(TcpProxy::start(audit.address()).await),
            false => None,
        };
        let mut import_config = import_svc::Config {
            service: test_service_config(import_db_url),
            ..Default::default()
        };
        import_config.amqp.url = SecretString::from(harness::amqp_url());
        import_config.amqp.prefix = broker.prefix.clone();
        import_config.amqp.reconnect_delay_ms = 200;
        import_config.auth.endpoint = format!(
            "http://{}",
            auth_proxy.as_ref().map_or(auth.address(), |p| p.address)
        );
        import_config.auth.token = Some(SecretString::from(import_token()));
        import_config.importer.backoff_base_ms = 20;
        import_config.audit.endpoint = format!(
            "http://{}",
            audit_proxy.as_ref().map_or(audit.address(), |p| p.address)
        );
        import_config.audit.token = Some(SecretString::from(token_of("import_writer")));
        (setup.import)(&mut import_config);
        let topology = queue::Names::with_prefix(&broker.prefix);
        let queues = topology.all_queues(&import_config.amqp.delay_tiers_ms());
        let exchanges = topology.all_exchanges();
        broker.track(
            &queues.iter().map(String::as_str).collect::<Vec<_>>(),
            &exchanges.iter().map(String::as_str).collect::<Vec<_>>(),
        );

        let mut stack = Stack {
            sim,
            broker,
            topology,
            import_database,
            import_config,
            import_clock: ManualClock::default(),
            auth_proxy,
            import_db_proxy,
            audit_proxy,
            auth_audit_proxy,
            import: None,
            replicas: Vec::new(),
            auth,
            audit,
        };
        stack.start_import().await;
        stack
    }

    /// Starts import-svc in-process (again, after [`Stack::stop_import`]).
    pub async fn start_import(&mut self) {
        let config = self.import_config.clone();
        let clock: SharedClock = Arc::new(self.import_clock.clone());
        let task = Task::start(None, |listener, shutdown| {
            import_svc::run_with(config, listener, shutdown, import_svc::Options { clock })
        })
        .await;
        self.import = Some(task);
    }

    /// Starts one more import-svc in-process, a replica of the first: the same config,
    /// database and queues. It runs until the stack stops.
    pub async fn start_import_replica(&mut self) {
        let config = self.import_config.clone();
        let clock: SharedClock = Arc::new(self.import_clock.clone());
        let task = Task::start(None, |listener, shutdown| {
            import_svc::run_with(config, listener, shutdown, import_svc::Options { clock })
        })
        .await;
        self.replicas.push(task);
    }

    /// Stops the in-process import-svc gracefully.
    pub async fn stop_import(&mut self) {
        if let Some(task) = self.import.take() {
            task.stop().await;
        }
    }

    pub fn import_address(&self) -> SocketAddr {
        self.import
            .as_ref()
            .expect("import-svc is running")
            .address()
    }

    pub async fn auth(&self) -> AuthServiceClient<tonic::transport::Channel> {
        AuthServiceClient::new(channel(self.auth.address()).await)
    }

    pub fn auth_address(&self) -> SocketAddr {
        self.auth.address()
    }

    /// auth-svc's database, for tests that break what it stores.
    pub fn auth_database(&self) -> &TestDatabase {
        self.auth.database.as_ref().expect("auth-svc's database")
    }

    pub fn audit_address(&self) -> SocketAddr {
        self.audit.address()
    }

    /// The events audit-svc holds for `tenant` of `kinds` (all when empty); none while
    /// audit-svc cannot answer.
    pub async fn audit_events(&self, tenant: &str, kinds: &[EventKind]) -> Vec<AuditEvent> {
        harness::audit_events(self.audit_address(), tenant, kinds)
            .await
            .unwrap_or_default()
    }

    pub async fn audit(&self) -> AuditServiceClient<tonic::transport::Channel> {
        AuditServiceClient::new(channel(self.audit.address()).await)
    }

    pub async fn compliance(
        &self,
    ) -> proto::audit::v1::compliance_service_client::ComplianceServiceClient<
        tonic::transport::Channel,
    > {
        proto::audit::v1::compliance_service_client::ComplianceServiceClient::new(
            channel(self.audit.address()).await,
        )
    }

    /// Injects a fault into the simulator's US region, where the tests' connections live.
    pub async fn fault(&self, fault: clio_sim::Fault) {
        self.sim.admin().inject(Region::Us, fault).await.unwrap();
    }

    /// A company contact added at the simulator (US), as someone at the firm would.
    pub async fn create_contact(&self, name: &str) -> clio_sim::RecordId {
        self.sim
            .admin()
            .create_record(
                Region::Us,
                clio_sim::Resource::Contacts,
                serde_json::json!({ "name": name, "type": "Company" }),
            )
            .await
            .unwrap()
    }

    /// A contact deleted at the simulator (US).
    /// The activities created through the API at the simulator (US, account 1): what a
    /// write to Clio left there.
    pub async fn created_activities(&self) -> Vec<serde_json::Value> {
        self.sim
            .admin()
            .created_activities(clio_sim::Region::Us, 1)
            .await
            .unwrap()
    }

    pub async fn delete_contact(&self, id: i64) {
        self.sim
            .admin()
            .delete_record(Region::Us, clio_sim::Resource::Contacts, &id.to_string())
            .await
            .unwrap();
    }

    pub async fn import(&self) -> ImportServiceClient<tonic::transport::Channel> {
        ImportServiceClient::new(channel(self.import_address()).await)
    }

    /// Every `WatchJob` update of `job_id` until the stream ends with the job.
    pub async fn watch_to_the_end(&self, job_id: &str) -> Vec<import::JobProgress> {
        let mut watch = self
            .import()
            .await
            .watch_job(with_bearer(
                import::WatchJobRequest {
                    job_id: job_id.to_owned(),
                },
                &token_of("operator"),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut updates = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(60), watch.message())
                .await
                .expect("the watch ends when the job does");
            match next.unwrap() {
                Some(update) => updates.push(update),
                None => return updates,
            }
        }
    }

    /// Registers a Clio app with `scopes` at the simulator and at auth-svc, has compliance
    /// approve it, and connects `principal` as Clio user `clio_user` out-of-band.
    /// Returns the connection id.
    pub async fn connect(&self, scopes: &[&str], principal: &str, clio_user: i64) -> String {
        self.try_connect(scopes, principal, clio_user)
            .await
            .unwrap_or_else(|status| panic!("{principal} could not connect: {status:?}"))
    }

    /// [`Stack::connect`], answering auth-svc's refusal of the completion instead of
    /// panicking on it.
    pub async fn try_connect(
        &self,
        scopes: &[&str],
        principal: &str,
        clio_user: i64,
    ) -> Result<String, tonic::Status> {
        let auth = self.auth_address();
        harness::connect_out_of_band(&self.sim, auth, scopes, principal, clio_user).await
    }

    /// Publishes `job` on the import exchange as a producer would (protobuf body).
    pub async fn publish(&self, job: &import::ImportJob) {
        self.broker
            .publish(
                &self.topology.jobs_exchange,
                JOB_ROUTING_KEY,
                &prost::Message::encode_to_vec(job),
                Some(content_type::PROTOBUF),
            )
            .await;
    }

    /// Publishes a JSON job body on the import exchange, as a producer without protobuf
    /// would.
    pub async fn publish_json(&self, job: &serde_json::Value) {
        self.broker
            .publish(
                &self.topology.jobs_exchange,
                JOB_ROUTING_KEY,
                job.to_string().as_bytes(),
                Some(content_type::JSON),
            )
            .await;
    }

    pub async fn submit(&self, job: import::ImportJob) -> String {
        self.import()
            .await
            .submit_job(with_bearer(
                import::SubmitJobRequest { job: Some(job) },
                &token_of("job_submitter"),
            ))
            .await
            .unwrap()
            .into_inner()
            .job_id
    }

    pub async fn job(&self, job_id: &str) -> import::Job {
        self.try_job(job_id)
            .await
            .unwrap_or_else(|| panic!("job {job_id} not found"))
    }

    /// The job, or `None` while import-svc has not yet taken it from the queue.
    pub async fn try_job(&self, job_id: &str) -> Option<import::Job> {
        let answer = self
            .import()
            .await
            .get_job(with_bearer(
                import::GetJobRequest {
                    job_id: job_id.into(),
                },
                &token_of("operator"),
            ))
            .await;
        match answer {
            Ok(job) => Some(job.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("GetJob {job_id}: {status}"),
        }
    }

    /// Waits until the job reaches a final status and returns it.
    pub async fn finished(&self, job_id: &str, within: Duration) -> import::Job {
        poll_until(
            &format!("job {job_id} to finish"),
            within,
            Duration::from_millis(50),
            || async {
                let job = self.try_job(job_id).await?;
                let status = import::JobStatus::try_from(job.status).ok()?;
                matches!(
                    status,
                    import::JobStatus::Completed
                        | import::JobStatus::Failed
                        | import::JobStatus::Cancelled
                        | import::JobStatus::DeadLettered
                )
                .then_some(job)
            },
        )
        .await
    }

    /// Live (not deleted) rows of `resource` in import-svc's database, and all rows.
    pub async fn stored(&self, resource: &str) -> (i64, i64) {
        let mut db = self.import_database.connect().await;
        let table = import_svc::records::table(resource.parse().unwrap());
        let live: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE deleted_at IS NULL"
        ))
        .fetch_one(&mut db)
        .await
        .unwrap();
        let all: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut db)
            .await
            .unwrap();
        (live, all)
    }

    pub async fn stop(mut self) {
        for replica in self.replicas.drain(..) {
            replica.stop().await;
        }
        self.stop_import().await;
        self.auth.stop().await;
        self.audit.stop().await;
        self.sim.stop().await;
    }
}

/// A full job over `resources` for `connection`, with a fresh id.
pub fn full_job(connection: &str, resources: &[&str]) -> import::ImportJob {
    import::ImportJob {
        job_id: uuid::Uuid::new_v4().to_string(),
        connection_id: connection.into(),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        mode: import::ImportMode::Full as i32,
        requested_by: "e2e".into(),
        ..Default::default()
    }
}

fn auth_config(sim: &ClioSim, database: SecretString, audit: SocketAddr) -> auth_svc::Config {
    let mut config = auth_svc::Config {
        service: test_service_config(database),
        ..Default::default()
    };
    config.keys = vec![auth_svc::config::KeyConfig {
        id: "k1".into(),
        key: Some(SecretString::from(
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned(),
        )),
        key_file: None,
    }];
    config.active_key_id = "k1".into();
    config.clio.regions.us = sim.base_url(Region::Us);
    config.audit.endpoint = format!("http://{audit}");
    config.audit.token = Some(SecretString::from(token_of("auth_writer")));
    // Usage and deauthorize retries on a test's time scale (reports read both).
    config.leases.usage_flush_ms = 200;
    config.revocation.retry_interval_ms = 200;
    config.revocation.first_retry_after_ms = 4_000;
    config
}
