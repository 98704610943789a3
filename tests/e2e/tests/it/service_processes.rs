//! The three services as child processes of the test, for tests that need each service to
//! be a process of its own: a process has one global `tracing` subscriber, so only
//! separate processes export spans under separate `service.name`s. Each binary is
//! configured by a TOML file holding the settings tests change, listens on `127.0.0.1:0`
//! and is found through the address it logs.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use clio_sim::{ClioSim, Region, SimConfig};
use harness::{ServingStatus, TestBroker, TestDatabase, token_of, wait_for_health};
use proto::queue;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::services::Service;

/// A service binary running as a child of the test; killed when dropped.
pub struct ServiceProcess {
    pub kind: Service,
    pub address: SocketAddr,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl ServiceProcess {
    /// Starts `kind`'s binary with the configuration file `toml` and the extra environment
    /// `env`, and waits until it serves.
    pub async fn spawn(kind: Service, toml: &str, env: &[(String, String)]) -> ServiceProcess {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config.path(), toml).unwrap();
        let mut child = Command::new(harness::service_binary(kind.binary()))
            .arg("--config")
            .arg(config.path())
            .env_remove(format!("{}CONFIG", kind.env_prefix()))
            // The line naming the address is at INFO, whatever the runner's RUST_LOG says.
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (found, address) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().unwrap();
        // Read to the end: a full pipe would stop the service mid-log.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut found = Some(found);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = listening_address(&line)
                    && let Some(found) = found.take()
                {
                    let _ = found.send(address);
                }
            }
        });
        let address = tokio::time::timeout(Duration::from_secs(60), address)
            .await
            .unwrap_or_else(|_| panic!("{kind:?} did not start listening"))
            .unwrap_or_else(|_| panic!("{kind:?} exited before listening"));
        wait_for_health(address, kind.grpc_services()[0], ServingStatus::Serving).await;
        ServiceProcess {
            kind,
            address,
            child,
            _config: config,
        }
    }

    /// SIGTERM, as a deployment stops a service, and its exit status once it stopped.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("the service is running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{:?} did not stop after SIGTERM", self.kind))
            .unwrap()
    }
}

/// The address in the JSON log line `serving gRPC and HTTP`.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    if entry.get("message")?.as_str()? != "serving gRPC and HTTP" {
        return None;
    }
    entry.get("address")?.as_str()?.parse().ok()
}

/// The `[service]` table every test service shares: JSON logs, the test callers, fast
/// health checks, and `database`.
fn service_toml(database: &TestDatabase) -> String {
    format!(
        "[service]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\nhealth_interval_ms = 100\n\
         shutdown_grace_ms = 2000\ndatabase.url = {:?}\ncallers = {}\n\n",
        database.url,
        harness::callers_toml()
    )
}

/// The simulator (US), RabbitMQ under a fresh prefix, and audit-svc, auth-svc and
/// import-svc as processes, each with its own database, wired as in production.
pub struct ProcessStack {
    pub sim: ClioSim,
    /// Held for its clean-up: the prefix's queues and exchanges go when it is dropped.
    _broker: TestBroker,
    pub audit: ServiceProcess,
    pub auth: ServiceProcess,
    pub import: ServiceProcess,
    _databases: Vec<TestDatabase>,
}

impl ProcessStack {
    /// Starts everything; `env` adds variables to each service's environment.
    pub async fn start(
        test: &str,
        sim: SimConfig,
        env: impl Fn(Service) -> Vec<(String, String)>,
    ) -> ProcessStack {
        let sim = ClioSim::start(sim).await.unwrap();
        let databases = [
            TestDatabase::create().await,
            TestDatabase::create().await,
            TestDatabase::create().await,
        ];
        let audit = ServiceProcess::spawn(
            Service::Audit,
            &audit_toml(&databases[0]),
            &env(Service::Audit),
        )
        .await;
        let auth_toml = auth_toml(&databases[1], &sim, audit.address);
        let auth = ServiceProcess::spawn(Service::Auth, &auth_toml, &env(Service::Auth)).await;
        let mut broker = TestBroker::connect(test).await;
        let names = queue::Names::with_prefix(&broker.prefix);
        let queues = names.all_queues(&import_svc::Config::default().amqp.delay_tiers_ms());
        let exchanges = names.all_exchanges();
        broker.track(
            &queues.iter().map(String::as_str).collect::<Vec<_>>(),
            &exchanges.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let import_toml = import_toml(&databases[2], &broker.prefix, auth.address, audit.address);
        let import =
            ServiceProcess::spawn(Service::Import, &import_toml, &env(Service::Import)).await;
        ProcessStack {
            sim,
            _broker: broker,
            audit,
            auth,
            import,
            _databases: databases.into(),
        }
    }

    /// Stops the services gracefully, producers first, asserting each exits 0; then the
    /// simulator.
    pub async fn terminate(self) {
        for service in [self.import, self.auth, self.audit] {
            let kind = service.kind;
            let status = service.terminate().await;
            assert!(status.success(), "{kind:?} exited with {status}");
        }
        self.sim.stop().await;
    }
}

fn audit_toml(database: &TestDatabase) -> String {
    use audit_svc::config::{AUTH_SVC_KINDS, IMPORT_SVC_KINDS};
    format!(
        "{}[signing]\nkey = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\n\
         [[writers]]\ncaller = \"auth_writer\"\nsources = [\"auth-svc\"]\nkinds = {AUTH_SVC_KINDS:?}\n\n\
         [[writers]]\ncaller = \"import_writer\"\nsources = [\"import-svc\"]\nkinds = {IMPORT_SVC_KINDS:?}\n",
        service_toml(database)
    )
}

fn auth_toml(database: &TestDatabase, sim: &ClioSim, audit: SocketAddr) -> String {
    format!(
        "active_key_id = \"k1\"\n\n{}[[keys]]\nid = \"k1\"\n\
         key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\n\
         [clio.regions]\nus = {:?}\n\n\
         [audit]\nendpoint = \"http://{audit}\"\ntoken = {:?}\n\n\
         [leases]\nusage_flush_ms = 200\n",
        service_toml(database),
        sim.base_url(Region::Us),
        token_of("auth_writer"),
    )
}

fn import_toml(
    database: &TestDatabase,
    prefix: &str,
    auth: SocketAddr,
    audit: SocketAddr,
) -> String {
    format!(
        "{}[amqp]\nurl = {:?}\nprefix = {prefix:?}\nreconnect_delay_ms = 200\n\n\
         [auth]\nendpoint = \"http://{auth}\"\ntoken = {:?}\n\n\
         [importer]\nbackoff_base_ms = 20\n\n\
         [audit]\nendpoint = \"http://{audit}\"\ntoken = {:?}\n",
        service_toml(database),
        harness::amqp_url(),
        token_of("import"),
        token_of("import_writer"),
    )
}
