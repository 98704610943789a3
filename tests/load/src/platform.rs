//! The platform the rows run against, wired as the e2e stack wires it
//! (`tests/e2e/tests/it/stack.rs`): the Clio simulator, audit-svc and auth-svc in this
//! process on `127.0.0.1:0`, each service on a fresh database; a Clio user connected through
//! the out-of-band flow exactly as a person would. import-svc is started on top
//! ([`crate::import_host`]).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clio_sim::{ClioSim, Region, SimConfig};
use harness::{SpawnedService, TestDatabase, channel, spawn_service, token_of, with_bearer};
use proto::auth::v1 as auth;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use secrecy::SecretString;
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
    _audit_db: TestDatabase,
    _auth_db: TestDatabase,
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
        let auth =
            spawn_service(|listener, shutdown| auth_svc::run(auth_config, listener, shutdown))
                .await;
        Ok(Platform {
            sim,
            audit,
            auth,
            _audit_db: audit_db,
            _auth_db: auth_db,
        })
    }

    pub fn auth_address(&self) -> SocketAddr {
        self.auth.address
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
