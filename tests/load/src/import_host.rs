//! import-svc on top of a [`Platform`]: its own fresh database and queue prefix, in this
//! process or as a child process. As a process its CPU time and memory are its own
//! (`/proc/<pid>`); in this process they include the simulator and the other services.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use harness::{
    SpawnedService, TestBroker, TestDatabase, channel, spawn_service, token_of, with_bearer,
};
use proto::imports::v1 as import;
use proto::imports::v1::import_service_client::ImportServiceClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::transport::Channel;

use crate::platform::{Platform, service_config};

/// Where import-svc runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportHost {
    /// `import_svc::run` in this process.
    InProcess,
    /// `program args… --config FILE`: the `import-svc` binary, or `clio-load` itself with
    /// its hidden `serve-import-svc` subcommand (the same code as linked here, so never a
    /// stale binary).
    Process {
        program: PathBuf,
        args: Vec<OsString>,
    },
}

impl ImportHost {
    pub fn describe(&self) -> String {
        match self {
            ImportHost::InProcess => "in-process".to_owned(),
            ImportHost::Process { program, .. } => format!(
                "child process ({})",
                program.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }
}

enum Runner {
    Task(SpawnedService),
    Child {
        child: tokio::process::Child,
        _config: tempfile::NamedTempFile,
    },
}

/// import-svc, running.
pub struct ImportSvc {
    pub address: SocketAddr,
    pub database: TestDatabase,
    pub topology: proto::queue::Names,
    runner: Runner,
    // Its queues and exchanges are deleted when this is dropped.
    _broker: TestBroker,
}

/// The pool of an import-svc running `jobs` jobs at once: a page write per job, the reserve
/// import-svc keeps for its API and background work, and up to 10 spare connections the
/// jobs share to overlap their page writes. Small enough that the benchmark's services
/// together (import-svc also holds a lock connection per running job, outside this pool)
/// stay well under Postgres's own `max_connections` (100 by default): a connection past
/// it is refused ("sorry, too many clients already"), which import-svc rightly reports as
/// "database unavailable" (seen in session 11 with 2 × jobs + 4).
pub fn pool_for_jobs(jobs: usize) -> u32 {
    let spare = jobs.min(10);
    u32::try_from(jobs + spare)
        .unwrap_or(u32::MAX)
        .saturating_add(import_svc::job::write_slots::POOL_RESERVE)
}

/// import-svc's settings for the benchmarks: the platform's auth-svc and audit-svc, the
/// rate-limit reserve off (the simulator's limit is off or the row measures it).
pub fn import_config(
    platform: &Platform,
    database: SecretString,
    prefix: &str,
) -> import_svc::Config {
    let mut config = import_svc::Config {
        service: service_config(database),
        ..Default::default()
    };
    config.amqp.url = SecretString::from(harness::amqp_url());
    config.amqp.prefix = prefix.to_owned();
    config.amqp.reconnect_delay_ms = 200;
    config.auth.endpoint = format!("http://{}", platform.auth_address());
    config.auth.token = Some(SecretString::from(token_of("import")));
    config.audit.endpoint = format!("http://{}", platform.audit_address());
    config.audit.token = Some(SecretString::from(token_of("import_writer")));
    config.importer.backoff_base_ms = 20;
    config.importer.rate_limit_reserve = 0;
    config
}

impl ImportSvc {
    /// Starts import-svc with [`import_config`], changed by `tweak` (page size,
    /// concurrency).
    pub async fn start(
        platform: &Platform,
        host: &ImportHost,
        tweak: impl FnOnce(&mut import_svc::Config),
    ) -> Result<ImportSvc> {
        let mut broker = TestBroker::connect("load").await;
        let database = TestDatabase::create().await;
        let mut config = import_config(platform, database.secret_url(), &broker.prefix);
        tweak(&mut config);
        let topology = proto::queue::Names::with_prefix(&broker.prefix);
        let queues = topology.all_queues(&config.amqp.delay_tiers_ms());
        let exchanges = topology.all_exchanges();
        broker.track(
            &queues.iter().map(String::as_str).collect::<Vec<_>>(),
            &exchanges.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let (address, runner) = match host {
            ImportHost::InProcess => {
                let task =
                    spawn_service(|listener, shutdown| import_svc::run(config, listener, shutdown))
                        .await;
                (task.address, Runner::Task(task))
            }
            ImportHost::Process { program, args } => spawn_child(program, args, &config).await?,
        };
        Ok(ImportSvc {
            address,
            database,
            topology,
            runner,
            _broker: broker,
        })
    }

    /// The child process's id; `None` in this process.
    pub fn pid(&self) -> Option<u32> {
        match &self.runner {
            Runner::Task(_) => None,
            Runner::Child { child, .. } => child.id(),
        }
    }

    pub async fn client(&self) -> ImportServiceClient<Channel> {
        ImportServiceClient::new(channel(self.address).await)
    }

    /// `SubmitJob`, as a producer with the job-submitter role calls it.
    pub async fn submit(&self, job: import::ImportJob) -> Result<String> {
        let answer = self
            .client()
            .await
            .submit_job(with_bearer(
                import::SubmitJobRequest { job: Some(job) },
                &token_of("job_submitter"),
            ))
            .await
            .context("SubmitJob")?;
        Ok(answer.into_inner().job_id)
    }

    /// The job, or `None` while import-svc has not yet taken it from the queue.
    pub async fn job(
        &self,
        client: &mut ImportServiceClient<Channel>,
        job_id: &str,
    ) -> Result<Option<import::Job>> {
        let answer = client
            .get_job(with_bearer(
                import::GetJobRequest {
                    job_id: job_id.into(),
                },
                &token_of("operator"),
            ))
            .await;
        match answer {
            Ok(job) => Ok(Some(job.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status).with_context(|| format!("GetJob {job_id}")),
        }
    }

    /// Polls until the job is final; an error unless it COMPLETED.
    pub async fn completed(&self, job_id: &str, within: Duration) -> Result<import::Job> {
        let done = self.all_completed(&[job_id.to_owned()], within).await?;
        Ok(done
            .into_iter()
            .next()
            .map(|(job, _)| job)
            .unwrap_or_default())
    }

    /// Polls until every job is final, noting when each was first seen COMPLETED; an
    /// error unless all completed.
    pub async fn all_completed(
        &self,
        job_ids: &[String],
        within: Duration,
    ) -> Result<Vec<(import::Job, std::time::Instant)>> {
        let mut client = self.client().await;
        let give_up = tokio::time::Instant::now() + within;
        let mut done: Vec<Option<(import::Job, std::time::Instant)>> = vec![None; job_ids.len()];
        while done.iter().any(Option::is_none) {
            for (slot, job_id) in done.iter_mut().zip(job_ids) {
                if slot.is_none() {
                    *slot = self.final_state(&mut client, job_id).await?;
                }
            }
            if tokio::time::Instant::now() >= give_up {
                bail!("jobs did not complete within {within:?}");
            }
            // Short enough to add little to a job of seconds, long enough to cost nothing.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(done.into_iter().flatten().collect())
    }

    async fn final_state(
        &self,
        client: &mut ImportServiceClient<Channel>,
        job_id: &str,
    ) -> Result<Option<(import::Job, std::time::Instant)>> {
        let Some(job) = self.job(client, job_id).await? else {
            return Ok(None);
        };
        let status = import::JobStatus::try_from(job.status).unwrap_or_default();
        match status {
            import::JobStatus::Completed => Ok(Some((job, std::time::Instant::now()))),
            import::JobStatus::Failed
            | import::JobStatus::Cancelled
            | import::JobStatus::DeadLettered => {
                bail!("job {job_id} ended {status:?}: {}", job.failure_reason)
            }
            _ => Ok(None),
        }
    }

    /// Live rows of import-svc's `table`.
    pub async fn stored(&self, table: &str) -> Result<i64> {
        let mut db = self.database.connect().await;
        let sql = format!("SELECT count(*) FROM {table} WHERE deleted_at IS NULL");
        Ok(sqlx::query_scalar(&sql).fetch_one(&mut db).await?)
    }

    pub async fn stop(self) -> Result<()> {
        match self.runner {
            Runner::Task(task) => task.stop().await?,
            Runner::Child { mut child, .. } => stop_child(&mut child).await?,
        }
        drop(self.database);
        Ok(())
    }
}

/// Starts `program args… --config FILE` listening on a free port and waits until it
/// serves.
async fn spawn_child(
    program: &PathBuf,
    args: &[OsString],
    config: &import_svc::Config,
) -> Result<(SocketAddr, Runner)> {
    // A port nothing listens on: bound, read, released (the child binds it a moment later).
    let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(config_toml(config, address).as_bytes())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg("--config")
        .arg(file.path())
        // Its own settings come from the file alone.
        .env_remove("IMPORT_SVC_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    wait_listening(&mut child, address).await?;
    harness::wait_for_health(address, "", harness::ServingStatus::Serving).await;
    Ok((
        address,
        Runner::Child {
            child,
            _config: file,
        },
    ))
}

/// Waits until the child accepts connections on `address` (it migrates its database
/// first); an error if it exits or takes longer than a cold start on a busy machine.
async fn wait_listening(child: &mut tokio::process::Child, address: SocketAddr) -> Result<()> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("import-svc exited before it listened: {status}");
        }
        if tokio::time::Instant::now() >= give_up {
            bail!("import-svc did not listen on {address} within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM (graceful: the consumer hands jobs back, pools close), SIGKILL after 10 s.
async fn stop_child(child: &mut tokio::process::Child) -> Result<()> {
    if let Some(pid) = child.id() {
        // No signal API in the workspace's dependencies; kill(1) sends it by process id.
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => {
            status?;
        }
        Err(_) => child.kill().await?,
    }
    Ok(())
}

/// The settings [`import_config`] makes, as the binary's TOML (its `Config` reads files,
/// it is not serialisable).
fn config_toml(config: &import_svc::Config, listen: SocketAddr) -> String {
    let secret = |s: &Option<SecretString>| {
        s.as_ref()
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default()
    };
    format!(
        "[service]\nlisten = \"{listen}\"\nlog_format = \"json\"\nlog_filter = \"warn\"\n\
         health_interval_ms = {health}\n\
         database.url = {db:?}\ndatabase.max_connections = {pool}\ncallers = {callers}\n\n\
         [amqp]\nurl = {amqp:?}\nprefix = {prefix:?}\nreconnect_delay_ms = 200\n\
         prefetch = {prefetch}\n\n\
         [auth]\nendpoint = {auth:?}\ntoken = {auth_token:?}\n\n\
         [importer]\nbackoff_base_ms = {backoff}\nrate_limit_reserve = {reserve}\n\
         max_concurrent_jobs = {jobs}\npage_size = {page_size}\n\n\
         [audit]\nendpoint = {audit:?}\ntoken = {audit_token:?}\n",
        health = config.service.health_interval_ms,
        db = config.service.database.url.expose_secret(),
        pool = config.service.database.max_connections,
        callers = harness::callers_toml(),
        amqp = config.amqp.url.expose_secret(),
        prefix = config.amqp.prefix,
        prefetch = config.amqp.prefetch,
        auth = config.auth.endpoint,
        auth_token = secret(&config.auth.token),
        backoff = config.importer.backoff_base_ms,
        reserve = config.importer.rate_limit_reserve,
        jobs = config.importer.max_concurrent_jobs,
        page_size = config.importer.page_size,
        audit = config.audit.endpoint,
        audit_token = secret(&config.audit.token),
    )
}

/// A full job over `resources` for `connection`, with a fresh id.
pub fn full_job(connection: &str, resources: &[&str]) -> import::ImportJob {
    import::ImportJob {
        job_id: uuid::Uuid::new_v4().to_string(),
        connection_id: connection.into(),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        mode: import::ImportMode::Full as i32,
        requested_by: "clio-load".into(),
        ..Default::default()
    }
}
