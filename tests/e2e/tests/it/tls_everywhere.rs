//! TLS on every hop, end to end: the three services serve only mTLS, import-svc reaches
//! auth-svc and both producers reach audit-svc by client certificate alone (no bearer
//! credential configured), import-svc speaks AMQPS to the broker, every service reaches
//! Postgres with `sslmode=verify-full`, and the `clioctl` binary runs the demo over
//! `https://` with the CA and a client certificate. All certificates are made here.
//!
//! The shared broker and database speak plaintext; each sits behind a [`TlsFront`] that
//! refuses a client that does not start TLS, so a silent plaintext fallback fails the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clio_sim::{AppSpec, ClioSim, Region, SimConfig};
use harness::tls::{Protocol, TestCa, TlsFront};
use harness::{
    ServingStatus, SpawnedService, TestBroker, TestDatabase, health_status, poll_until, token_of,
};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::common::v1 as common;
use proto::queue;
use secrecy::SecretString;
use service_runtime::CancellationToken;
use service_runtime::config::{ClientTls, TlsConfig};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::clioctl::clioctl_with_env;
use crate::services::{test_service_config, test_writers};

const TENANT: &str = "firm-1";
const CLIENT_ID: &str = "tls-demo-app";
const CLIENT_SECRET: &str = "tls-demo-app-secret-0123456789";

/// A service's own certificate files and how its clients trust and present.
struct Certificates {
    ca: TestCa,
}

impl Certificates {
    /// `service.tls` for `name`: its server certificate, and client certificates demanded.
    fn server(&self, name: &str) -> TlsConfig {
        let (cert_path, key_path) = self
            .ca
            .write(&format!("{name}-server"), &self.ca.server(name));
        TlsConfig {
            cert_path,
            key_path,
            client_ca_path: Some(self.ca.ca_path()),
        }
    }

    /// A client's `*.tls`: the CA, and a certificate whose subject CN is `subject`.
    fn client(&self, subject: &str) -> ClientTls {
        let (cert, key) = self
            .ca
            .write(&format!("{subject}-client"), &self.ca.client(subject));
        ClientTls {
            ca_path: self.ca.ca_path(),
            cert_path: Some(cert),
            key_path: Some(key),
            domain: None,
        }
    }
}

/// A service task serving mTLS; reachable only with a client certificate.
struct Task {
    service: SpawnedService,
    _database: TestDatabase,
}

impl Task {
    async fn start<F, Fut>(database: TestDatabase, certificates: &Certificates, run: F) -> Task
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let service = SpawnedService::start(run).await;
        let address = service.address;
        // harness::wait_for_health speaks plain HTTP/2; this one presents a certificate.
        let probe = https(address, certificates, "health-probe");
        poll_until(
            &format!("{address} SERVING over mTLS"),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                let channel = probe.connect().await.ok()?;
                let status = health_status(channel, "").await.ok()?;
                (status == ServingStatus::Serving).then_some(())
            },
        )
        .await;
        Task {
            service,
            _database: database,
        }
    }

    async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// An `https` endpoint trusting the test CA and presenting a certificate for `subject`.
fn https(address: SocketAddr, certificates: &Certificates, subject: &str) -> Endpoint {
    let client = certificates.ca.client(subject);
    Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&certificates.ca.cert))
                .identity(Identity::from_pem(&client.cert, &client.key)),
        )
        .unwrap()
}

/// Sets `tls_subject` on the test caller `name`: its certificate now identifies it.
fn identify_by_certificate(
    callers: &mut [service_runtime::config::CallerCredential],
    name: &str,
    subject: &str,
) {
    let caller = callers
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no test caller {name}"));
    caller.tls_subject = Some(subject.to_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_runs_with_tls_on_every_hop() {
    let certificates = Certificates {
        ca: TestCa::new("clio-connect e2e CA"),
    };
    let ca_path: PathBuf = certificates.ca.ca_path();
    let sim = ClioSim::start(SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let approval = format!("{}/oauth/approval", sim.base_url(Region::Us));
    sim.admin()
        .register_app(
            Region::Us,
            &AppSpec {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                redirect_uris: vec![approval],
                permissions: ["contacts", "matters", "calendar", "activities", "users"]
                    .iter()
                    .map(|family| format!("{family}:read"))
                    .collect(),
            },
        )
        .await
        .unwrap();

    // Postgres and the broker, behind TLS fronts with certificates from the test CA.
    let audit_db = TestDatabase::create().await;
    let postgres = TlsFront::start(
        audit_db.server_address(),
        &certificates.ca.server("postgres"),
        Protocol::Postgres,
    )
    .await;
    let broker_front = TlsFront::start(
        harness::amqp_address(),
        &certificates.ca.server("rabbitmq"),
        Protocol::Tls,
    )
    .await;

    // audit-svc: mTLS; the producers' certificates identify their writer credentials.
    let mut service =
        test_service_config(audit_db.secret_url_verify_full(postgres.address, &ca_path));
    service.tls = Some(certificates.server("audit-svc"));
    identify_by_certificate(&mut service.callers, "auth_writer", "auth-svc");
    identify_by_certificate(&mut service.callers, "import_writer", "import-svc");
    let audit_config = audit_svc::Config {
        service,
        writers: test_writers(),
        ..Default::default()
    };
    let audit = Task::start(audit_db, &certificates, |listener, shutdown| {
        audit_svc::run(audit_config, listener, shutdown)
    })
    .await;

    // auth-svc: mTLS; import-svc's certificate is its `import` caller; its outbox reaches
    // audit-svc by certificate, with no bearer credential configured.
    let auth_db = TestDatabase::create().await;
    let mut auth_config = auth_svc::Config {
        service: test_service_config(auth_db.secret_url_verify_full(postgres.address, &ca_path)),
        ..Default::default()
    };
    auth_config.service.tls = Some(certificates.server("auth-svc"));
    identify_by_certificate(&mut auth_config.service.callers, "import", "import-svc");
    auth_config.keys = vec![auth_svc::config::KeyConfig {
        id: "k1".into(),
        key: Some(SecretString::from(
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned(),
        )),
        key_file: None,
    }];
    auth_config.active_key_id = "k1".into();
    auth_config.clio.regions.us = sim.base_url(Region::Us);
    auth_config.audit.endpoint = format!("https://{}", audit.service.address);
    auth_config.audit.token = None;
    auth_config.audit.tls = Some(certificates.client("auth-svc"));
    let auth = Task::start(auth_db, &certificates, |listener, shutdown| {
        auth_svc::run(auth_config, listener, shutdown)
    })
    .await;

    // import-svc: mTLS; leases from auth-svc and audit delivery by certificate; AMQPS.
    let mut broker = TestBroker::connect("tls_everywhere").await;
    let import_db = TestDatabase::create().await;
    let mut import_config = import_svc::Config {
        service: test_service_config(import_db.secret_url_verify_full(postgres.address, &ca_path)),
        ..Default::default()
    };
    import_config.service.tls = Some(certificates.server("import-svc"));
    import_config.amqp.url =
        SecretString::from(format!("amqps://guest:guest@{}/%2f", broker_front.address));
    import_config.amqp.tls = Some(ClientTls {
        ca_path: ca_path.clone(),
        ..ClientTls::default()
    });
    import_config.amqp.prefix = broker.prefix.clone();
    import_config.amqp.reconnect_delay_ms = 200;
    import_config.auth.endpoint = format!("https://{}", auth.service.address);
    import_config.auth.token = None;
    import_config.auth.tls = Some(certificates.client("import-svc"));
    import_config.audit.endpoint = format!("https://{}", audit.service.address);
    import_config.audit.token = None;
    import_config.audit.tls = Some(certificates.client("import-svc"));
    let topology = queue::Names::with_prefix(&broker.prefix);
    let queues = topology.all_queues(&import_config.amqp.delay_tiers_ms());
    let exchanges = topology.all_exchanges();
    broker.track(
        &queues.iter().map(String::as_str).collect::<Vec<_>>(),
        &exchanges.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let import = Task::start(import_db, &certificates, |listener, shutdown| {
        import_svc::run(import_config, listener, shutdown)
    })
    .await;

    // clioctl, as an operator runs it: https endpoints, the CA, a client certificate, and
    // the bearer credentials of the roles it acts in.
    let clioctl_tls = certificates.client("clioctl");
    let config = tempfile::NamedTempFile::new().unwrap();
    let mut text = format!(
        "auth = \"https://{}\"\nimport = \"https://{}\"\naudit = \"https://{}\"\n\n[tokens]\n",
        auth.service.address, import.service.address, audit.service.address
    );
    for role in [
        "operator",
        "compliance",
        "connector",
        "job_submitter",
        "data_reader",
    ] {
        text.push_str(&format!("{role} = \"{}\"\n", token_of(role)));
    }
    text.push_str(&format!(
        "\n[demo]\nclio_sim = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret = \"{CLIENT_SECRET}\"\nclio_user_id = 1\n",
        sim.base_url(Region::Us)
    ));
    std::fs::write(config.path(), text).unwrap();
    let env = [
        (
            "CLIOCTL_TLS__CA_PATH",
            clioctl_tls.ca_path.display().to_string(),
        ),
        (
            "CLIOCTL_TLS__CERT_PATH",
            clioctl_tls
                .cert_path
                .as_ref()
                .unwrap()
                .display()
                .to_string(),
        ),
        (
            "CLIOCTL_TLS__KEY_PATH",
            clioctl_tls.key_path.as_ref().unwrap().display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = clioctl_with_env(config.path(), &env, &["demo"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("demo finished"), "{run:?}");

    // Without the CA, clioctl refuses an https endpoint before sending anything.
    let run = clioctl_with_env(config.path(), &[], &["import", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("tls.ca_path"), "{run:?}");

    // Both producers' events reached audit-svc under their own writers, by certificate.
    let compliance = https(audit.service.address, &certificates, "compliance-console");
    let writers = poll_until(
        "events of both writers in audit-svc",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let channel = compliance.connect().await.ok()?;
            let events = AuditServiceClient::new(channel)
                .query(harness::with_bearer(
                    proto::audit::v1::QueryRequest {
                        tenant: TENANT.into(),
                        ..Default::default()
                    },
                    &token_of("compliance"),
                ))
                .await
                .ok()?
                .into_inner()
                .events;
            let of = |kind: common::EventKind| {
                events
                    .iter()
                    .find(|e| e.kind == kind as i32)
                    .map(|e| e.writer.clone())
            };
            Some((
                of(common::EventKind::ConnectionGranted)?,
                of(common::EventKind::ImportCompleted)?,
            ))
        },
    )
    .await;
    assert_eq!(
        writers,
        ("auth_writer".to_owned(), "import_writer".to_owned())
    );

    // Every database and broker connection was TLS; none tried plaintext.
    assert!(postgres.sessions() >= 3, "{} sessions", postgres.sessions());
    assert_eq!(postgres.refused(), Vec::<String>::new());
    assert!(broker_front.sessions() >= 1, "no AMQPS session");
    assert_eq!(broker_front.refused(), Vec::<String>::new());

    // And no service answers a client without a certificate, or in plaintext.
    for address in [
        auth.service.address,
        import.service.address,
        audit.service.address,
    ] {
        let plaintext = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        let answered = match plaintext.connect().await {
            Ok(channel) => health_status(channel, "").await.is_ok(),
            Err(_) => false,
        };
        assert!(!answered, "{address} answered a plaintext client");
    }

    import.stop().await;
    auth.stop().await;
    audit.stop().await;
    sim.stop().await;
}
