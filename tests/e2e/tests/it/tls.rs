//! The optional TLS and mTLS of the shared server (`service.tls`): with a certificate and
//! key a service speaks only TLS; with a client CA as well it also demands a client
//! certificate signed by that CA. A throwaway CA and its certificates are made per test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use harness::tls::{Pem, TestCa};
use harness::{ServingStatus, TestDatabase, health_status, poll_until};
use service_runtime::config::TlsConfig;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::services::{Running, Service, start_with_config, test_service_config};

/// The server's files on disk, where `service.tls` points: the CA's directory.
struct ServerFiles {
    ca: TestCa,
    cert: PathBuf,
    key: PathBuf,
}

impl ServerFiles {
    fn write(ca: TestCa, server: &Pem) -> ServerFiles {
        let (cert, key) = ca.write("server", server);
        ServerFiles { ca, cert, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.ca.ca_path().with_file_name(name)
    }

    fn tls(&self, require_client_certificates: bool) -> TlsConfig {
        TlsConfig {
            cert_path: self.cert.clone(),
            key_path: self.key.clone(),
            client_ca_path: require_client_certificates.then(|| self.ca.ca_path()),
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
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.cert));
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
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
    let server = ca.server("audit-svc");
    let files = ServerFiles::write(ca, &server);
    let running = start_audit_with_tls(files.tls(false)).await;
    let ca = &files.ca;

    let trusted = https(running.address, ca, None);
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
    let server = ca.server("audit-svc");
    let client = ca.client("e2e client");
    let files = ServerFiles::write(ca, &server);
    let running = start_audit_with_tls(files.tls(true)).await;
    let ca = &files.ca;

    let with_certificate = https(running.address, ca, Some(&client));
    wait_until_serving(&with_certificate).await;

    assert_refused(
        "a client without a certificate",
        &https(running.address, ca, None),
        "CertificateRequired",
    )
    .await;
    let stranger = TestCa::new("some other CA").client("e2e client");
    assert_refused(
        "a client whose certificate another CA signed",
        &https(running.address, ca, Some(&stranger)),
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

/// Verify over `endpoint` with no bearer credential, or with `bearer`.
async fn verify_as(endpoint: &Endpoint, bearer: Option<&str>) -> Result<(), tonic::Code> {
    let channel = endpoint.connect().await.unwrap();
    let mut request = tonic::Request::new(proto::audit::v1::VerifyRequest {
        tenant: "firm-1".into(),
        ..Default::default()
    });
    if let Some(bearer) = bearer {
        request = harness::with_bearer(request.into_inner(), bearer);
    }
    proto::audit::v1::audit_service_client::AuditServiceClient::new(channel)
        .verify(request)
        .await
        .map(|_| ())
        .map_err(|status| status.code())
}

#[tokio::test]
async fn a_client_certificate_subject_identifies_its_caller_without_a_bearer() {
    let ca = TestCa::new("e2e test CA");
    let server = ca.server("audit-svc");
    let desk = ca.client("compliance-desk");
    let unmapped = ca.client("nobody-in-particular");
    let files = ServerFiles::write(ca, &server);
    let database = TestDatabase::create().await;
    let mut service = test_service_config(database.secret_url());
    service.tls = Some(files.tls(true));
    service
        .callers
        .push(service_runtime::config::CallerCredential {
            name: "compliance-desk".into(),
            token: None,
            tls_subject: Some("compliance-desk".into()),
            roles: vec![service_runtime::Role::Compliance],
            tenants: None,
        });
    let running = start_with_config(Service::Audit, database, service).await;
    let ca = &files.ca;
    let as_desk = https(running.address, ca, Some(&desk));
    wait_until_serving(&as_desk).await;

    // The certificate alone is the credential.
    assert_eq!(verify_as(&as_desk, None).await, Ok(()));
    // A certificate the CA signed for a subject no caller is configured with is no one.
    let as_unmapped = https(running.address, ca, Some(&unmapped));
    assert_eq!(
        verify_as(&as_unmapped, None).await,
        Err(tonic::Code::Unauthenticated)
    );
    // A bearer credential, when sent, decides: a wrong one is refused whatever the
    // certificate, and a right one works from a certificate no caller is named by.
    assert_eq!(
        verify_as(&as_desk, Some("not-a-credential-0123456789")).await,
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        verify_as(&as_unmapped, Some(&harness::token_of("compliance"))).await,
        Ok(())
    );
    // The mapped subject carries its caller's roles, no more.
    let channel = as_desk.connect().await.unwrap();
    let record = proto::audit::v1::audit_service_client::AuditServiceClient::new(channel)
        .record(proto::audit::v1::RecordRequest::default())
        .await
        .unwrap_err();
    assert_eq!(record.code(), tonic::Code::PermissionDenied, "{record:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_unusable_tls_file_stops_start_up_naming_the_setting() {
    let ca = TestCa::new("e2e test CA");
    let server = ca.server("audit-svc");
    let files = ServerFiles::write(ca, &server);
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
