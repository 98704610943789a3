//! Certificates made per test, and a TLS front for the shared RabbitMQ and Postgres.
//!
//! The machine's broker and database are shared by every test and speak plaintext; a test
//! that proves a client speaks TLS puts a [`TlsFront`] before them instead of reconfiguring
//! them. The front terminates TLS with a certificate from the test's [`TestCa`] and
//! forwards plaintext, and it refuses any client that does not start TLS, so a client that
//! silently fell back to plaintext fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A throwaway CA that signs server and client certificates, and a directory holding them
/// as files (where services' `*.tls` settings point). Removed when dropped.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert: String,
    dir: TempDir,
}

/// The names every server certificate carries: how tests reach a local service.
const LOCAL_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("ca.crt"), &cert).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            cert,
            dir,
        }
    }

    /// The CA certificate's file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server certificate for a local service.
    pub fn server(&self, common_name: &str) -> Pem {
        self.sign(
            common_name,
            &LOCAL_NAMES,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject CN is `common_name` (what mTLS maps to a caller).
    pub fn client(&self, common_name: &str) -> Pem {
        self.sign(common_name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A leaf for `names` (DNS names or IP addresses) usable for `purpose`.
    pub fn sign(&self, common_name: &str, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Pem {
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

    /// Writes `pem` as `<name>.crt` and `<name>.key` (mode 0600) beside the CA; returns
    /// both paths.
    pub fn write(&self, name: &str, pem: &Pem) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{name}.crt"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &pem.cert).unwrap();
        std::fs::write(&key, &pem.key).unwrap();
        restrict(&key);
        (cert, key)
    }
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

/// What a front expects a client to say before TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TLS from the first byte (AMQPS, HTTPS).
    Tls,
    /// Postgres: an `SSLRequest` answered `S`, then TLS; a plaintext start-up is refused.
    Postgres,
}

/// A TLS-terminating front for a plaintext server on this machine.
pub struct TlsFront {
    pub address: SocketAddr,
    sessions: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Postgres's `SSLRequest` and `GSSENCRequest` codes.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

impl TlsFront {
    /// Serves TLS with `identity` on `127.0.0.1:<random>`, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr, identity: &Pem, protocol: Protocol) -> TlsFront {
        let certs = CertificateDer::pem_slice_iter(identity.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sessions = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (counted, refusals) = (sessions.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (counted, refusals) = (counted.clone(), refusals.clone());
                tokio::spawn(async move {
                    if let Err(refusal) =
                        serve(client, upstream, acceptor, protocol, &counted).await
                    {
                        refusals.lock().unwrap().push(refusal.to_string());
                    }
                });
            }
        });
        TlsFront {
            address,
            sessions,
            refused,
            task,
        }
    }

    /// Connections that completed a TLS handshake.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Why connections were refused: no TLS, or a failed handshake.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one client; an error is a refusal (no TLS, or a failed handshake). How the
/// forwarded session ends afterwards is the client's and server's business.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    acceptor: TlsAcceptor,
    protocol: Protocol,
    sessions: &AtomicUsize,
) -> std::io::Result<()> {
    if protocol == Protocol::Postgres {
        negotiate_postgres_ssl(&mut client).await?;
    }
    let mut tls = acceptor.accept(client).await?;
    sessions.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
    }
    Ok(())
}

/// Answers the client's `SSLRequest` with `S` (declining GSS encryption first if asked);
/// anything else is a plaintext start-up, which is refused.
async fn negotiate_postgres_ssl(client: &mut TcpStream) -> std::io::Result<()> {
    loop {
        let length = client.read_u32().await?;
        let code = client.read_u32().await?;
        match (length, code) {
            (8, SSL_REQUEST) => return client.write_all(b"S").await,
            (8, GSSENC_REQUEST) => client.write_all(b"N").await?,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "a plaintext Postgres start-up: this front serves only TLS",
                ));
            }
        }
    }
}
