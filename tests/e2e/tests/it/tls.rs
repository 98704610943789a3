//! The optional TLS and mTLS of the shared server (`service.tls`): with a certificate and
//! key a service speaks only TLS; with a client CA as well it also demands a client
//! certificate signed by that CA. A throwaway CA and its certificates are made per test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use harness::{ServingStatus, TestDatabase, health_status, poll_until};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use service_runtime::config::TlsConfig;
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::services::{Running, Service, start_with_config, test_service_config};

/// A certificate and its private key, both PEM.
struct Pem {
    cert: String,
    key: String,
}

impl Pem {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// A CA that signs server and client certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    fn certificate(&self) -> Certificate {
        Certificate::from_pem(&self.cert)
    }

    /// The service's certificate, valid for how tests reach it.
    fn server_certificate(&self) -> Pem {
        self.sign(
            "audit-svc",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A leaf for `names` (DNS names or IP addresses) usable for `purpose`.
    fn sign(&self, common_name: &str, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Pem {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        Pem {
            cert,
            key: key.serialize_pem(),
        }
    }
}

/// The server's files on disk, where `service.tls` points; removed when dropped.
struct ServerFiles {
    dir: TempDir,
}

impl ServerFiles {
    fn write(ca: &TestCa, server: &Pem) -> ServerFiles {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("server.crt"), &server.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
        std::fs::write(dir.path().join("client-ca.crt"), &ca.cert).unwrap();
        ServerFiles { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self, require_client_certificates: bool) -> TlsConfig {
        TlsConfig {
            cert_path: self.path("server.crt"),
            key_path: self.path("server.key"),
            client_ca_path: require_client_certificates.then(|| self.path("client-ca.crt")),
        }
    }
}

/// Starts audit-svc with `tls`; the files it names must outlive the start-up.
async fn start_audit_with_tls(tls: TlsConfig) -> Running {
    let database = TestDatabase::create().await;
    let mut service = test_service_config(database.secret_url());
    service.tls = Some(tls);
    start_with_config(Service::Audit, database, service).await
}

/// An `https` endpoint trusting `ca`, presenting `client` when given. The URL names the
/// IP address, so the server certificate must carry it as a subject alternative name.
fn https(address: SocketAddr, ca: &TestCa, client: Option<&Pem>) -> Endpoint {
    let mut tls = ClientTlsConfig::new().ca_certificate(ca.certificate());
    if let Some(client) = client {
        tls = tls.identity(client.identity());
    }
    bounded(Channel::from_shared(format!("https://{address}")).unwrap())
        .tls_config(tls)
        .unwrap()
}

/// A plaintext `http` endpoint, as an old client would use.
fn plaintext(address: SocketAddr) -> Endpoint {
    bounded(Channel::from_shared(format!("http://{address}")).unwrap())
}

/// A refused client must fail, not hang: a hang would pass for a refusal.
fn bounded(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
}

/// Overall health through `endpoint`, or why the connection or the call failed.
async fn health_through(endpoint: &Endpoint) -> Result<ServingStatus, String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    health_status(channel, "")
        .await
        .map_err(|status| format!("call: {status:?}"))
}

async fn wait_until_serving(endpoint: &Endpoint) {
    poll_until(
        "health SERVING over TLS",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (health_through(endpoint).await == Ok(ServingStatus::Serving)).then_some(()) },
    )
    .await;
}

/// Asserts `endpoint` cannot get a health answer, and that the failure is a refusal
/// rather than the client's own timeout: its reason must mention `because` (the TLS alert
/// or verification error, matched case-insensitively), or any refusal when it is empty.
async fn assert_refused(what: &str, endpoint: &Endpoint, because: &str) {
    let outcome = health_through(endpoint).await;
    let Err(reason) = outcome else {
        panic!("{what}: expected a refusal, got {outcome:?}");
    };
    let lowercase = reason.to_lowercase();
    assert!(
        !lowercase.contains("timed out") && !lowercase.contains("elapsed"),
        "{what}: the server did not refuse but hung: {reason}"
    );
    assert!(
        lowercase.contains(&because.to_lowercase()),
        "{what}: refused, but not because of {because:?}: {reason}"
    );
}

#[tokio::test]
async fn with_a_certificate_the_service_speaks_only_tls() {
    let ca = TestCa::new("e2e test CA");
    let server = ca.server_certificate();
    let files = ServerFiles::write(&ca, &server);
    let running = start_audit_with_tls(files.tls(false)).await;

    let trusted = https(running.address, &ca, None);
    wait_until_serving(&trusted).await;

    assert_refused("a plaintext client", &plaintext(running.address), "").await;
    let stranger = TestCa::new("some other CA");
    assert_refused(
        "a client trusting another CA",
        &https(running.address, &stranger, None),
        "UnknownIssuer",
    )
    .await;

    // The refused handshakes did not take the server down.
    assert_eq!(health_through(&trusted).await, Ok(ServingStatus::Serving));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn with_a_client_ca_the_service_demands_a_client_certificate() {
    let ca = TestCa::new("e2e test CA");
    let server = ca.server_certificate();
    let client = ca.sign("e2e client", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let files = ServerFiles::write(&ca, &server);
    let running = start_audit_with_tls(files.tls(true)).await;

    let with_certificate = https(running.address, &ca, Some(&client));
    wait_until_serving(&with_certificate).await;

    assert_refused(
        "a client without a certificate",
        &https(running.address, &ca, None),
        "CertificateRequired",
    )
    .await;
    let stranger =
        TestCa::new("some other CA").sign("e2e client", &[], ExtendedKeyUsagePurpose::ClientAuth);
    assert_refused(
        "a client whose certificate another CA signed",
        &https(running.address, &ca, Some(&stranger)),
        "UnknownCA",
    )
    .await;
    assert_refused("a plaintext client", &plaintext(running.address), "").await;

    assert_eq!(
        health_through(&with_certificate).await,
        Ok(ServingStatus::Serving)
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_unusable_tls_file_stops_start_up_naming_the_setting() {
    let ca = TestCa::new("e2e test CA");
    let server = ca.server_certificate();
    let files = ServerFiles::write(&ca, &server);
    std::fs::write(files.path("garbage.key"), "not a key").unwrap();
    for (tls, setting) in [
        (
            TlsConfig {
                client_ca_path: Some(files.path("missing-ca.crt")),
                ..files.tls(true)
            },
            "service.tls.client_ca_path",
        ),
        (
            TlsConfig {
                key_path: files.path("garbage.key"),
                ..files.tls(false)
            },
            "service.tls: unusable (Error parsing TLS private key",
        ),
    ] {
        let running = start_audit_with_tls(tls).await;
        let error = tokio::time::timeout(Duration::from_secs(20), running.task)
            .await
            .expect("start-up to stop")
            .unwrap()
            .expect_err("start-up to fail");
        let message = format!("{error:#}");
        assert!(
            message.contains(setting),
            "{message} does not name {setting}"
        );
        drop(running.database);
    }
}
