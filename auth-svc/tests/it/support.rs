//! Starting auth-svc for a test against a fresh database and its own Clio simulator, and
//! the steps most tests share: registering and approving an app, connecting a person,
//! leasing, reading the outbox.

use std::net::SocketAddr;
use std::time::Duration;

use auth_svc::Config;
use auth_svc::config::KeyConfig;
use base64::Engine;
use clio_api::RegionUrls;
use clio_sim::{AppSpec, ClioSim, ConsentOutcome, Decision, SimConfig};
use harness::{ServingStatus, SpawnedService, TestDatabase, channel, spawn_service, with_bearer};
use prost::Message;
use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::common::v1::{Access, AuditEvent, EventKind, Scope, ScopeJustification};
use secrecy::SecretString;
use service_runtime::CancellationToken;
use service_runtime::clock::ManualClock;
use service_runtime::config::ServiceConfig;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub use clio_sim::Region as SimRegion;

/// The two data keys every test service is configured with (`k1` active at start).
pub const KEY_IDS: [&str; 2] = ["k1", "k2"];

pub fn key_material(id: &str) -> String {
    let byte = if id == "k1" { 0x11 } else { 0x22 };
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// What a test may change before auth-svc starts.
pub struct Setup {
    pub sim: SimConfig,
    /// Applied to the test config last.
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            sim: sim_config(),
            tweak: Box::new(|_| {}),
        }
    }
}

/// A simulator without rate limits, serving US and EU.
pub fn sim_config() -> SimConfig {
    SimConfig {
        regions: vec![SimRegion::Us, SimRegion::Eu],
        rate_limit: None,
        ..SimConfig::default()
    }
}

pub struct Stack {
    pub sim: ClioSim,
    pub address: SocketAddr,
    /// One HTTP/2 connection to auth-svc, shared by every call of the test.
    channel: Channel,
    pub database: TestDatabase,
    /// auth-svc's clock; every expiry it judges goes by this.
    pub clock: ManualClock,
    service: SpawnedService,
    /// The person's browser: cookies auth-svc's start links set (`name=value`).
    browser_cookies: std::sync::Mutex<Vec<String>>,
}

/// The test config: fast background loops, two keys, Clio at the simulator.
pub fn test_config(database: &TestDatabase, address: SocketAddr, sim: &ClioSim) -> Config {
    let mut config = Config {
        service: ServiceConfig {
            callers: harness::caller_config(),
            health_interval_ms: 100,
            shutdown_grace_ms: 2_000,
            ..ServiceConfig::default()
        },
        public_base_url: format!("http://{address}"),
        keys: KEY_IDS
            .iter()
            .map(|id| KeyConfig {
                id: (*id).into(),
                key: Some(SecretString::from(key_material(id))),
                key_file: None,
            })
            .collect(),
        active_key_id: KEY_IDS[0].into(),
        ..Config::default()
    };
    config.service.database.url = database.secret_url();
    config.service.database.max_connections = 20;
    let mut regions = RegionUrls::uniform("http://127.0.0.1:1");
    for region in [SimRegion::Us, SimRegion::Eu] {
        regions.set(api_region(region), sim.base_url(region));
    }
    config.clio.regions = regions;
    config.clio.request_timeout_ms = 3_000;
    // The proactive refresher only runs when a test asks for it (see `proactive`).
    config.refresh.interval_ms = 3_600_000;
    config.refresh.backoff_ms = 20;
    config.leases.usage_flush_ms = 100;
    config.revocation.retry_interval_ms = 50;
    config.revocation.first_retry_after_ms = 1_000;
    config
}

pub fn api_region(region: SimRegion) -> clio_api::Region {
    match region {
        SimRegion::Us => clio_api::Region::Us,
        SimRegion::Eu => clio_api::Region::Eu,
        SimRegion::Ca => clio_api::Region::Ca,
        SimRegion::Au => clio_api::Region::Au,
    }
}

/// The wire region of a simulator region, as a request carries it.
pub fn wire_region(region: SimRegion) -> i32 {
    let wire = match region {
        SimRegion::Us => proto::common::v1::Region::Us,
        SimRegion::Eu => proto::common::v1::Region::Eu,
        SimRegion::Ca => proto::common::v1::Region::Ca,
        SimRegion::Au => proto::common::v1::Region::Au,
    };
    wire as i32
}

pub async fn start(setup: Setup) -> Stack {
    let sim = ClioSim::start(setup.sim)
        .await
        .expect("start the simulator");
    let database = TestDatabase::create().await;
    let clock = ManualClock::default();
    let service = serve(&clock, |address| {
        let mut config = test_config(&database, address, &sim);
        (setup.tweak)(&mut config);
        config
    })
    .await;
    Stack {
        sim,
        address: service.address,
        channel: channel(service.address).await,
        database,
        clock,
        service,
        browser_cookies: std::sync::Mutex::default(),
    }
}

/// Runs auth-svc with `clock` and the config `config` builds for its address, and waits
/// until it reports serving.
async fn serve(clock: &ManualClock, config: impl FnOnce(SocketAddr) -> Config) -> SpawnedService {
    let options = auth_svc::Options {
        clock: std::sync::Arc::new(clock.clone()),
    };
    spawn_service(|listener, shutdown| {
        let config = config(listener.local_addr().unwrap());
        auth_svc::run_with(config, listener, shutdown, options)
    })
    .await
}

/// Another auth-svc process beside a [`Stack`]'s: the same database, simulator, keys and
/// clock, its own listener. What one replica does, the other must see.
pub struct Replica {
    channel: Channel,
    service: SpawnedService,
}

impl Replica {
    /// Leases as `import`, like [`Stack::lease`], through this replica.
    pub async fn lease(
        &self,
        connection_id: &str,
        scopes: &[&str],
    ) -> Result<pb::LeaseAccessTokenResponse, tonic::Status> {
        lease_through(&self.channel, "import", connection_id, scopes, false).await
    }

    /// Leases as `import` with `force_refresh` (as after Clio refused the token) through
    /// this replica: the connection gets new tokens.
    pub async fn lease_refreshed(
        &self,
        connection_id: &str,
        scopes: &[&str],
    ) -> Result<pb::LeaseAccessTokenResponse, tonic::Status> {
        lease_through(&self.channel, "import", connection_id, scopes, true).await
    }

    /// Revokes as `operator`, like [`Stack::revoke`], through this replica.
    pub async fn revoke(&self, connection_id: &str) -> pb::RevocationResult {
        revoke_through(&self.channel, connection_id).await
    }

    pub async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// An auth-svc that dies like a killed process: see [`Stack::killable_replica`].
pub struct KillableReplica {
    channel: Channel,
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableReplica {
    /// Leases as `import` through this replica.
    pub async fn lease(
        &self,
        connection_id: &str,
        scopes: &[&str],
    ) -> Result<pb::LeaseAccessTokenResponse, tonic::Status> {
        lease_through(&self.channel, "import", connection_id, scopes, false).await
    }

    /// Stops every task of this replica where it stands: nothing runs to completion,
    /// no shutdown path runs.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableReplica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// LeaseAccessToken as `caller` over `channel`.
async fn lease_through(
    channel: &Channel,
    caller: &str,
    connection_id: &str,
    scopes: &[&str],
    force_refresh: bool,
) -> Result<pb::LeaseAccessTokenResponse, tonic::Status> {
    AuthServiceClient::new(channel.clone())
        .lease_access_token(with_bearer(
            pb::LeaseAccessTokenRequest {
                connection_id: connection_id.into(),
                required_scopes: scopes.iter().map(|s| scope(s)).collect(),
                purpose: "job 42".into(),
                force_refresh,
            },
            &harness::token_of(caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// RevokeConnection as `operator` over `channel`, which must succeed.
async fn revoke_through(channel: &Channel, connection_id: &str) -> pb::RevocationResult {
    AuthServiceClient::new(channel.clone())
        .revoke_connection(with_bearer(
            pb::RevokeConnectionRequest {
                connection_id: connection_id.into(),
                reason: "left the matter team".into(),
            },
            &harness::token_of("operator"),
        ))
        .await
        .expect("RevokeConnection")
        .into_inner()
}

/// `<family>:<read|write>` as the wire type.
pub fn scope(text: &str) -> Scope {
    let (family, access) = text.split_once(':').expect("family:access");
    Scope {
        family: family.into(),
        access: match access {
            "read" => Access::Read,
            "write" => Access::Write,
            other => panic!("access {other}"),
        } as i32,
    }
}

/// An app as a test registers it, at the simulator and at auth-svc.
pub struct AppOptions {
    pub region: SimRegion,
    pub client_id: String,
    pub scopes: Vec<&'static str>,
    pub pkce: bool,
    pub tenant: String,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            region: SimRegion::Us,
            client_id: "import-app".into(),
            scopes: vec!["contacts:read", "matters:read"],
            pkce: false,
            tenant: "firm-a".into(),
        }
    }
}

/// A registered, approved app and what its secret is (for leak checks).
pub struct TestApp {
    pub app_id: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Stack {
    /// `apps` apps per region (US and EU) and one connection per app and Clio user 1..=users.
    /// The apps are the principal's own, so several people can be set up on one stack.
    pub async fn many_connections(
        &self,
        principal: &str,
        apps: usize,
        users: i64,
    ) -> (Vec<TestApp>, Vec<String>) {
        let owner: String = principal
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut registered = Vec::new();
        for region in [SimRegion::Us, SimRegion::Eu] {
            for n in 0..apps {
                registered.push(
                    self.app(AppOptions {
                        region,
                        client_id: format!("app-{owner}-{region}-{n}"),
                        ..AppOptions::default()
                    })
                    .await,
                );
            }
        }
        let mut ids = Vec::new();
        for app in &registered {
            for user in 1..=users {
                ids.push(self.connect(app, principal, user, None).await.connection_id);
            }
        }
        (registered, ids)
    }

    pub async fn offboard(&self, principal: &str) -> pb::OffboardUserResponse {
        self.client()
            .await
            .offboard_user(with_bearer(
                pb::OffboardUserRequest {
                    principal: principal.into(),
                    reason: "left the firm".into(),
                    tenant: String::new(),
                    departed_at: None,
                },
                &harness::token_of("operator"),
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// The app's declared scopes change to `contacts:read` alone (a new version), and
    /// compliance approves them.
    pub async fn narrow_to_contacts(&self, app_id: &str) {
        let mut client = self.client().await;
        let changed = client
            .update_app_scopes(with_bearer(
                pb::UpdateAppScopesRequest {
                    app_id: app_id.to_owned(),
                    declared_scopes: vec![ScopeJustification {
                        scope: Some(scope("contacts:read")),
                        justification: "the client import reads contacts".into(),
                    }],
                    reason: "matters are no longer imported".into(),
                },
                &harness::token_of("operator"),
            ))
            .await
            .unwrap()
            .into_inner();
        client
            .approve_app(with_bearer(
                pb::ApproveAppRequest {
                    app_id: app_id.to_owned(),
                    scopes_version: changed.scopes_version,
                    note: "narrower".into(),
                },
                &harness::token_of("compliance"),
            ))
            .await
            .unwrap();
    }

    /// The import app registered in the EU region, approved.
    pub async fn eu_app(&self) -> TestApp {
        self.app(AppOptions {
            region: SimRegion::Eu,
            client_id: "import-app-eu".into(),
            ..AppOptions::default()
        })
        .await
    }

    /// Injects a fault into one region of the simulator.
    pub async fn fault(&self, region: SimRegion, fault: clio_sim::Fault) {
        self.sim.admin().inject(region, fault).await.unwrap();
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn callback_uri(&self) -> String {
        format!("http://{}/oauth/callback", self.address)
    }

    pub fn approval_uri(&self, region: SimRegion) -> String {
        format!("{}/oauth/approval", self.sim.base_url(region))
    }

    /// Registers the app at the simulator (both redirect URIs) and at auth-svc, and has
    /// compliance approve it.
    pub async fn app(&self, options: AppOptions) -> TestApp {
        let client_secret = format!("client-secret-{}", uuid::Uuid::new_v4().simple());
        let redirect_uris = vec![self.callback_uri(), self.approval_uri(options.region)];
        self.sim
            .admin()
            .register_app(
                options.region,
                &AppSpec {
                    client_id: options.client_id.clone(),
                    client_secret: client_secret.clone(),
                    redirect_uris: redirect_uris.clone(),
                    permissions: options.scopes.iter().map(|s| (*s).to_owned()).collect(),
                },
            )
            .await
            .expect("register the app at the simulator");
        let app_id = self
            .register_at_auth(&options, &client_secret, redirect_uris)
            .await;
        TestApp {
            app_id,
            client_id: options.client_id,
            client_secret,
        }
    }

    /// Registers and approves an app at auth-svc only; returns its id.
    pub async fn register_at_auth(
        &self,
        options: &AppOptions,
        client_secret: &str,
        redirect_uris: Vec<String>,
    ) -> String {
        let mut client = self.client().await;
        let app = client
            .register_app(with_bearer(
                pb::RegisterAppRequest {
                    tenant: options.tenant.clone(),
                    name: format!("{} ({})", options.client_id, options.region),
                    region: wire_region(options.region),
                    client_id: options.client_id.clone(),
                    client_secret: client_secret.to_owned(),
                    redirect_uris,
                    declared_scopes: options
                        .scopes
                        .iter()
                        .map(|s| ScopeJustification {
                            scope: Some(scope(s)),
                            justification: format!("the import reads {s}"),
                        })
                        .collect(),
                    pkce_enabled: options.pkce,
                },
                &harness::token_of("operator"),
            ))
            .await
            .expect("RegisterApp")
            .into_inner();
        client
            .approve_app(with_bearer(
                pb::ApproveAppRequest {
                    app_id: app.app_id.clone(),
                    scopes_version: app.scopes_version,
                    note: "reviewed".into(),
                },
                &harness::token_of("compliance"),
            ))
            .await
            .expect("ApproveApp");
        app.app_id
    }

    pub async fn start_authorization(
        &self,
        app_id: &str,
        principal: &str,
        mode: pb::AuthorizationMode,
        reconnect: Option<&str>,
    ) -> Result<pb::StartAuthorizationResponse, tonic::Status> {
        self.client()
            .await
            .start_authorization(with_bearer(
                pb::StartAuthorizationRequest {
                    app_id: app_id.into(),
                    principal: principal.into(),
                    mode: mode as i32,
                    reconnect_connection_id: reconnect.unwrap_or_default().into(),
                },
                &harness::token_of("connector"),
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn complete(&self, state: &str, code: &str) -> Result<pb::Connection, tonic::Status> {
        self.complete_with(&harness::token_of("connector"), state, code)
            .await
    }

    /// CompleteAuthorization with the service credential `token`.
    pub async fn complete_with(
        &self,
        token: &str,
        state: &str,
        code: &str,
    ) -> Result<pb::Connection, tonic::Status> {
        self.client()
            .await
            .complete_authorization(with_bearer(
                pb::CompleteAuthorizationRequest {
                    state: state.into(),
                    code: code.into(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// StartAuthorization in out-of-band mode for a new connection, which must succeed.
    pub async fn start_oob(&self, app_id: &str, principal: &str) -> pb::StartAuthorizationResponse {
        self.start_authorization(app_id, principal, pb::AuthorizationMode::OutOfBand, None)
            .await
            .expect("StartAuthorization (out of band)")
    }

    /// StartAuthorization in web mode for a new connection, which must succeed.
    pub async fn start_web(&self, app_id: &str, principal: &str) -> pb::StartAuthorizationResponse {
        self.start_authorization(app_id, principal, pb::AuthorizationMode::Web, None)
            .await
            .expect("StartAuthorization (web)")
    }

    /// Clio user `user_id` answers the consent screen of `authorize_url` with `decision`.
    /// A web flow's link is auth-svc's start page: the browser opens it first (keeping the
    /// cookie it sets) and lands on Clio's consent screen.
    pub async fn decide(
        &self,
        authorize_url: &str,
        user_id: i64,
        decision: Decision,
    ) -> ConsentOutcome {
        let clio_url = if authorize_url.starts_with(&self.start_uri()) {
            self.open_start_link(authorize_url).await
        } else {
            authorize_url.to_owned()
        };
        self.sim
            .admin()
            .consent(&clio_url, user_id, decision)
            .await
            .expect("consent")
    }

    /// auth-svc's start page for web authorizations.
    pub fn start_uri(&self) -> String {
        format!("http://{}/connect/start", self.address)
    }

    /// The browser opens a web flow's start link: keeps the cookie it sets and returns
    /// where it redirects (Clio's authorize URL).
    pub async fn open_start_link(&self, link: &str) -> String {
        let answer = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(link)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("open the start link");
        assert_eq!(answer.status(), 303, "the start link redirects to Clio");
        let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().trim().to_owned();
        self.browser_cookies.lock().unwrap().push(pair);
        answer.headers()["location"].to_str().unwrap().to_owned()
    }

    fn cookie_header(&self) -> String {
        self.browser_cookies.lock().unwrap().join("; ")
    }

    /// The browser follows a link (Clio's redirect to the callback) with its cookies.
    pub async fn browser_get(&self, url: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("browser request")
    }

    /// Another browser (no cookies) follows the same link.
    pub async fn other_browser_get(&self, url: &str) -> reqwest::Response {
        reqwest::get(url).await.expect("browser request")
    }

    /// The code Clio issues when user `user_id` allows `authorize_url`.
    pub async fn approved_code(&self, authorize_url: &str, user_id: i64) -> String {
        self.decide(authorize_url, user_id, Decision::Allow)
            .await
            .code
            .expect("an approval issues a code")
    }

    /// The out-of-band flow end to end: start, approve as Clio user `user_id`, paste the
    /// approval page's title.
    pub async fn connect(
        &self,
        app: &TestApp,
        principal: &str,
        user_id: i64,
        reconnect: Option<&str>,
    ) -> pb::Connection {
        let started = self
            .start_authorization(
                &app.app_id,
                principal,
                pb::AuthorizationMode::OutOfBand,
                reconnect,
            )
            .await
            .expect("StartAuthorization");
        let consent = self
            .sim
            .admin()
            .consent(&started.authorization_url, user_id, Decision::Allow)
            .await
            .expect("consent");
        let title = consent.page_title.expect("an approval page title");
        self.complete(&started.state, &title)
            .await
            .expect("CompleteAuthorization")
    }

    pub async fn lease(
        &self,
        connection_id: &str,
        scopes: &[&str],
    ) -> Result<pb::LeaseAccessTokenResponse, tonic::Status> {
        self.lease_as("import", connection_id, scopes, false).await
    }

    /// The usual opening: the default app registered and approved, and `principal`
    /// connected through it as Clio user 1.
    pub async fn app_with_connection(&self, principal: &str) -> (TestApp, pb::Connection) {
        let app = self.app(AppOptions::default()).await;
        let connection = self.connect(&app, principal, 1, None).await;
        (app, connection)
    }

    /// The access token of a `contacts:read` lease, which must be granted.
    pub async fn lease_token(&self, connection_id: &str) -> String {
        self.lease(connection_id, &["contacts:read"])
            .await
            .expect("LeaseAccessToken")
            .access_token
    }

    /// ListConnections as `caller`, which must be allowed.
    pub async fn list_connections(
        &self,
        request: pb::ListConnectionsRequest,
        caller: &str,
    ) -> Vec<pb::Connection> {
        self.client()
            .await
            .list_connections(with_bearer(request, &harness::token_of(caller)))
            .await
            .expect("ListConnections")
            .into_inner()
            .connections
    }

    pub async fn lease_as(
        &self,
        caller: &str,
        connection_id: &str,
        scopes: &[&str],
        force_refresh: bool,
    ) -> Result<pb::LeaseAccessTokenResponse, tonic::Status> {
        lease_through(&self.channel, caller, connection_id, scopes, force_refresh).await
    }

    pub async fn connection(&self, connection_id: &str) -> pb::Connection {
        self.client()
            .await
            .get_connection(with_bearer(
                pb::GetConnectionRequest {
                    connection_id: connection_id.into(),
                },
                &harness::token_of("operator"),
            ))
            .await
            .expect("GetConnection")
            .into_inner()
    }

    pub async fn revoke(&self, connection_id: &str) -> pb::RevocationResult {
        revoke_through(&self.channel, connection_id).await
    }

    /// Every event in the outbox, in order, with its kind.
    pub async fn outbox(&self) -> Vec<(EventKind, AuditEvent)> {
        let mut db = self.database.connect().await;
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT event FROM audit_outbox ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap();
        rows.into_iter()
            .map(|(bytes,)| {
                let event = AuditEvent::decode(bytes.as_slice()).unwrap();
                (EventKind::try_from(event.kind).unwrap(), event)
            })
            .collect()
    }

    /// Outbox events of one kind about one connection.
    pub async fn events_about(&self, kind: EventKind, connection_id: &str) -> Vec<AuditEvent> {
        self.outbox()
            .await
            .into_iter()
            .filter(|(k, e)| {
                *k == kind
                    && e.refs
                        .as_ref()
                        .is_some_and(|r| r.connection_id == connection_id)
            })
            .map(|(_, e)| e)
            .collect()
    }

    /// One value of a query whose only parameter (`$1`) is `connection_id`.
    pub async fn scalar_about<T>(&self, sql: &'static str, connection_id: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        let mut db = self.database.connect().await;
        sqlx::query_scalar(sql)
            .bind(connection_id)
            .fetch_one(&mut db)
            .await
            .unwrap()
    }

    /// How many refresh requests reached the simulator's token endpoint.
    pub async fn refresh_calls(&self) -> u64 {
        self.sim.admin().calls().await.unwrap().token.refresh_token
    }

    /// How many authorization codes reached the simulator's token endpoint.
    pub async fn code_exchanges(&self) -> u64 {
        self.sim
            .admin()
            .calls()
            .await
            .unwrap()
            .token
            .authorization_code
    }

    pub async fn deauthorize_calls(&self) -> u64 {
        self.sim.admin().calls().await.unwrap().deauthorize
    }

    /// Starts a second auth-svc on this stack's database, simulator, keys and clock (the
    /// default test config: a `Setup::tweak` is not applied).
    pub async fn replica(&self) -> Replica {
        let service = serve(&self.clock, |address| {
            test_config(&self.database, address, &self.sim)
        })
        .await;
        Replica {
            channel: channel(service.address).await,
            service,
        }
    }

    /// Another auth-svc on the same database, simulator and clock, running on its own
    /// runtime so that [`KillableReplica::kill`] stops everything it runs at once (request
    /// handlers, background loops, pool) the way killing its process would. `tweak`
    /// adjusts its config (e.g. arms a fault point).
    pub async fn killable_replica(&self, tweak: impl FnOnce(&mut Config)) -> KillableReplica {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = test_config(&self.database, address, &self.sim);
        tweak(&mut config);
        let options = auth_svc::Options {
            clock: std::sync::Arc::new(self.clock.clone()),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            auth_svc::run_with(config, listener, CancellationToken::new(), options).await
        });
        harness::wait_for_health(address, "", ServingStatus::Serving).await;
        KillableReplica {
            channel: channel(address).await,
            runtime: Some(runtime),
        }
    }

    /// Moves auth-svc's clock (the simulator's clock stays).
    pub fn advance(&self, by: Duration) {
        self.clock.advance(chrono::Duration::from_std(by).unwrap());
    }

    pub async fn stop(self) {
        self.service.stop().await.unwrap();
        self.sim.stop().await;
    }
}

/// Asks Clio (the simulator) who a token belongs to, as import-svc would use a lease.
pub async fn who_am_i(
    stack: &Stack,
    region: SimRegion,
    token: &str,
) -> Result<clio_api::WhoAmI, clio_api::ClioError> {
    let mut regions = RegionUrls::uniform("http://127.0.0.1:1");
    for r in [SimRegion::Us, SimRegion::Eu] {
        regions.set(api_region(r), stack.sim.base_url(r));
    }
    let client = clio_api::ClioClient::new(regions, clio_api::HttpSettings::default()).unwrap();
    client
        .who_am_i(api_region(region), &SecretString::from(token.to_owned()))
        .await
}

pub fn status_of(code: i32) -> pb::ConnectionStatus {
    pb::ConnectionStatus::try_from(code).unwrap()
}

/// Asserts a call was refused with `code` and a message mentioning `needle`.
#[track_caller]
pub fn assert_refused(status: &tonic::Status, code: tonic::Code, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "{}", status.message());
}

/// An audit event's payload as JSON.
pub fn payload_of(event: &AuditEvent) -> serde_json::Value {
    serde_json::from_str(&event.payload_json).expect("the payload is JSON")
}
