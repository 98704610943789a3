//! The platform the rows run against, wired as the e2e stack wires it
//! (`tests/e2e/tests/it/stack.rs`): the Clio simulator, audit-svc and auth-svc in this
//! process on `127.0.0.1:0`, each service on a fresh database; a Clio user connected through
//! the out-of-band flow exactly as a person would. import-svc is started on top
//! ([`crate::import_host`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeDelta, Utc};
use clio_sim::{ClioSim, Region, SimConfig};
use futures_util::{StreamExt, TryStreamExt};
use harness::{
    ClioUser, SpawnedService, TestDatabase, channel, spawn_service, token_of, with_bearer,
};
use proto::auth::v1 as auth;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use secrecy::SecretString;
use service_runtime::clock::{Clock, SharedClock, system_clock};
use service_runtime::config::ServiceConfig;
use tonic::transport::Channel;

/// The tenant every connection of the platform belongs to.
pub const TENANT: &str = "firm-1";

/// The simulator, audit-svc and auth-svc, running.
pub struct Platform {
    pub sim: ClioSim,
    audit: SpawnedService,
    auth: SpawnedService,
    // Dropped (so removed) after the services stop.
    audit_db: TestDatabase,
    auth_db: TestDatabase,
}

/// The shared part of each service's config: the test callers (harness), a fresh database.
pub fn service_config(database_url: SecretString) -> ServiceConfig {
    let mut service = ServiceConfig {
        callers: harness::caller_config(),
        // Dependency checks are a query each; often enough to come up quickly, rarely
        // enough to cost nothing beside the load.
        health_interval_ms: 500,
        shutdown_grace_ms: 5_000,
        ..ServiceConfig::default()
    };
    service.database.url = database_url;
    service
}

impl Platform {
    /// Starts the simulator with `sim` (one region, US, is all the rows use) and the two
    /// services.
    pub async fn start(sim: SimConfig) -> Result<Platform> {
        Platform::start_with_clock(sim, system_clock()).await
    }

    /// [`Platform::start`] with auth-svc on `clock` (e.g. a [`ShiftedClock`], to make
    /// tokens expire without waiting).
    pub async fn start_with_clock(sim: SimConfig, clock: SharedClock) -> Result<Platform> {
        let sim = ClioSim::start(sim)
            .await
            .context("start the Clio simulator")?;
        let audit_db = TestDatabase::create().await;
        let audit_config = audit_svc::Config {
            service: service_config(audit_db.secret_url()),
            writers: vec![
                audit_svc::config::WriterGrant::auth_svc("auth_writer"),
                audit_svc::config::WriterGrant::import_svc("import_writer"),
            ],
            ..Default::default()
        };
        let audit =
            spawn_service(|listener, shutdown| audit_svc::run(audit_config, listener, shutdown))
                .await;
        let auth_db = TestDatabase::create().await;
        let auth_config = auth_config(&sim, auth_db.secret_url(), audit.address);
        let options = auth_svc::Options { clock };
        let auth = spawn_service(|listener, shutdown| {
            auth_svc::run_with(auth_config, listener, shutdown, options)
        })
        .await;
        Ok(Platform {
            sim,
            audit,
            auth,
            audit_db,
            auth_db,
        })
    }

    pub fn auth_address(&self) -> SocketAddr {
        self.auth.address
    }

    /// The names of auth-svc's and audit-svc's databases (their Postgres backends carry
    /// them in their process titles, see [`crate::procstat::postgres_backends_cpu`]).
    pub fn database_names(&self) -> (&str, &str) {
        (&self.auth_db.name, &self.audit_db.name)
    }

    pub fn audit_address(&self) -> SocketAddr {
        self.audit.address
    }

    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(channel(self.auth.address).await)
    }

    /// Registers a Clio app with `scopes` at the simulator and at auth-svc, has compliance
    /// approve it, and connects `principal` of [`TENANT`] as Clio user `clio_user`
    /// out-of-band, as the e2e tests do. Returns the connection id.
    pub async fn connect(
        &self,
        scopes: &[&str],
        principal: &str,
        clio_user: i64,
    ) -> Result<String> {
        harness::connect_out_of_band(&self.sim, self.auth.address, scopes, principal, clio_user)
            .await
            .map_err(|status| anyhow::anyhow!("{principal} could not connect: {status}"))
    }

    /// An app declaring `scopes`, registered at the simulator and at auth-svc and approved
    /// by compliance, for [`Platform::connect_many`]; returns its id.
    pub async fn approved_app(&self, scopes: &[&str]) -> String {
        harness::approved_app(&self.sim, &mut self.auth().await, scopes).await
    }

    /// Connects every `(principal, Clio user)` of `people` through app `app_id`, each
    /// through the whole out-of-band flow (start, consent at the simulator, paste the
    /// code), `concurrency` at a time; returns the connection ids in the order of
    /// `people`. The quick way to set up thousands of connections honestly.
    pub async fn connect_many(
        &self,
        app_id: &str,
        people: &[(String, ClioUser)],
        concurrency: usize,
    ) -> Result<Vec<String>> {
        let admin = self.sim.admin();
        let auth = self.auth().await;
        futures_util::stream::iter(people)
            .map(|(principal, user)| {
                let (admin, mut auth) = (&admin, auth.clone());
                async move {
                    harness::connect_to_app(admin, &mut auth, app_id, principal, *user)
                        .await
                        .map_err(|status| {
                            anyhow::anyhow!("{principal} could not connect: {status}")
                        })
                }
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }

    /// A lease of `connection`'s access token, as import-svc takes one.
    pub async fn lease(
        &self,
        connection: &str,
        scopes: &[&str],
    ) -> Result<auth::LeaseAccessTokenResponse> {
        Ok(self
            .auth()
            .await
            .lease_access_token(lease_request(connection, scopes)?)
            .await?
            .into_inner())
    }

    pub async fn stop(self) -> Result<()> {
        self.auth.stop().await?;
        self.audit.stop().await?;
        self.sim.stop().await;
        Ok(())
    }
}

/// `LeaseAccessToken` for `connection`, as import-svc's credential asks for it.
pub fn lease_request(
    connection: &str,
    scopes: &[&str],
) -> Result<tonic::Request<auth::LeaseAccessTokenRequest>> {
    let required_scopes = scopes
        .iter()
        .map(|s| Ok(s.parse::<scope_catalog::Scope>()?.to_wire()))
        .collect::<Result<Vec<_>>>()?;
    Ok(with_bearer(
        auth::LeaseAccessTokenRequest {
            connection_id: connection.to_owned(),
            required_scopes,
            purpose: "benchmark".into(),
            force_refresh: false,
        },
        &token_of("import"),
    ))
}

/// auth-svc as the e2e stack configures it, pointed at the simulator's US region.
fn auth_config(sim: &ClioSim, database: SecretString, audit: SocketAddr) -> auth_svc::Config {
    let mut config = auth_svc::Config {
        service: service_config(database),
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
    config
}

/// One region (US) with `contacts` contacts and the rate limit off.
pub fn unlimited_sim(contacts: u64) -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        dataset: clio_sim::DatasetSize {
            contacts,
            ..clio_sim::DatasetSize::default()
        },
        ..SimConfig::default()
    }
}

/// Wall-clock time plus an offset moved forward by hand: auth-svc's clock in a row that
/// makes every token expire at once, moved together with the simulator's
/// (`advance_clock`), so both sides agree the tokens are dead without anyone waiting.
#[derive(Debug, Clone, Default)]
pub struct ShiftedClock {
    offset_ms: Arc<AtomicI64>,
}

impl ShiftedClock {
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}
