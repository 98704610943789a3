//! TLS on every hop: the server side of `service.tls`, the client side every outgoing
//! connection shares (`*.tls`: gRPC to auth-svc and audit-svc, AMQPS, clioctl), and the
//! subject of a verified client certificate, which mTLS maps to a caller.
//!
//! One TLS stack (rustls with ring) serves all of it. Files are read once at start-up; a
//! file that cannot be read or parsed stops start-up naming its setting and path.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::config::ConfigError;

/// Server TLS; with `client_ca_path` set, clients must present a certificate (mTLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub client_ca_path: Option<PathBuf>,
}

/// How a client checks the server it connects to, and the certificate it presents.
///
/// ```toml
/// [auth.tls]
/// ca_path = "/etc/clio-connect/tls/ca.crt"          # the CA that signed the server
/// cert_path = "/etc/clio-connect/tls/import-svc.crt" # optional: mTLS client certificate
/// key_path = "/etc/clio-connect/tls/import-svc.key"
/// domain = "auth-svc"                                # optional: the name to verify
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM bundle of the CAs trusted to sign the server's certificate.
    pub ca_path: PathBuf,
    /// PEM client certificate, for servers that demand one (mTLS). Needs `key_path`.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    /// The name the server's certificate must carry, when it differs from the URL's host
    /// (e.g. connecting through an address the certificate does not name).
    pub domain: Option<String>,
}

/// A client certificate and its key, PEM.
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// What [`ClientTls`] names, read from disk.
pub struct ClientTlsFiles {
    pub ca_pem: Vec<u8>,
    pub identity: Option<ClientIdentity>,
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsFiles")
            .field("identity", &self.identity.as_ref().map(|_| "[REDACTED]"))
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Checks the settings without reading the files; `section` is where they live
    /// (`auth.tls`), so errors name the key as the file spells it.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.cert_path.is_some() != self.key_path.is_some() {
            return Err(ConfigError::invalid(
                format!("{section}.cert_path"),
                "cert_path and key_path go together (a client certificate needs its key)",
            ));
        }
        if self.domain.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return Err(ConfigError::invalid(
                format!("{section}.domain"),
                "must not be empty (leave it out to verify the URL's host)",
            ));
        }
        Ok(())
    }

    /// Whether this client presents a certificate (and so may need no bearer token).
    pub fn has_client_certificate(&self) -> bool {
        self.cert_path.is_some()
    }

    /// Reads the CA bundle and any client identity.
    pub fn read(&self, section: &str) -> Result<ClientTlsFiles, ConfigError> {
        self.validate(section)?;
        let ca_pem = read_file(section, "ca_path", &self.ca_path)?;
        if !String::from_utf8_lossy(&ca_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::invalid(
                format!("{section}.ca_path"),
                format!("{} holds no PEM certificate", self.ca_path.display()),
            ));
        }
        let identity = match (&self.cert_path, &self.key_path) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: read_file(section, "cert_path", cert)?,
                key_pem: read_file(section, "key_path", key)?,
            }),
            _ => None,
        };
        Ok(ClientTlsFiles {
            ca_pem,
            identity,
            domain: self.domain.clone(),
        })
    }
}

/// A lazily connecting gRPC endpoint for `url`, speaking TLS when `tls` is given.
///
/// The scheme and the TLS settings must agree: `https://` without `tls` would have no CA to
/// trust (this build carries no public root store, on purpose), and `tls` with `http://`
/// would silently send credentials in the clear. `field` names the URL setting.
pub fn grpc_endpoint(
    field: &str,
    url: &str,
    tls: Option<&ClientTls>,
) -> Result<Endpoint, ConfigError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::invalid(field, format!("not a usable endpoint ({e})")))?;
    let tls_section = tls_section_of(field);
    let https = url.starts_with("https://");
    match (https, tls) {
        (false, None) => Ok(endpoint),
        (true, None) => Err(ConfigError::invalid(
            format!("{tls_section}.ca_path"),
            format!("{field} is https, so the CA that signs the server must be given"),
        )),
        (false, Some(_)) => Err(ConfigError::invalid(
            field,
            format!("{tls_section} is set, so the endpoint must be https://"),
        )),
        (true, Some(tls)) => {
            let files = tls.read(&tls_section)?;
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(files.ca_pem));
            if let Some(identity) = files.identity {
                config = config.identity(Identity::from_pem(identity.cert_pem, identity.key_pem));
            }
            if let Some(domain) = files.domain {
                config = config.domain_name(domain);
            }
            endpoint.tls_config(config).map_err(|e| {
                ConfigError::invalid(tls_section, format!("unusable ({})", cause_of(&e)))
            })
        }
    }
}

/// `auth.endpoint` → `auth.tls`: where the TLS settings of an endpoint live.
fn tls_section_of(field: &str) -> String {
    match field.rsplit_once('.') {
        Some((section, _)) => format!("{section}.tls"),
        None => "tls".to_owned(),
    }
}

/// The server side of `service.tls`. A file that cannot be read is refused naming its
/// setting and path (validation checks existence, but not readability).
pub fn server_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, ConfigError> {
    let section = "service.tls";
    let cert = read_file(section, "cert_path", &tls.cert_path)?;
    let key = read_file(section, "key_path", &tls.key_path)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca_path {
        config = config.client_ca_root(Certificate::from_pem(read_file(
            section,
            "client_ca_path",
            ca,
        )?));
    }
    Ok(config)
}

fn read_file(section: &str, field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::invalid(
            format!("{section}.{field}"),
            format!("cannot read {} ({e})", path.display()),
        )
    })
}

/// tonic's own message is often just "transport error"; the cause says what is wrong.
pub(crate) fn cause_of(error: &(dyn std::error::Error + 'static)) -> String {
    error
        .source()
        .map_or_else(|| error.to_string(), |cause| cause.to_string())
}

/// The common name (CN) in the subject of a DER certificate: what mTLS maps to a caller.
/// Only ever called on a certificate the TLS handshake has already verified against
/// `service.tls.client_ca_path`.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};

    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let subject = &certificate.tbs_certificate.subject;
    // The last CN wins, as in the conventional reading of a distinguished name.
    subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|attribute| attribute.oid == x509_cert::der::oid::db::rfc4519::CN)
        .filter_map(|attribute| {
            attribute
                .value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    attribute
                        .value
                        .decode_as::<PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_owned())
                })
                .ok()
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoint_scheme_and_tls_settings_must_agree() {
        let tls = ClientTls {
            ca_path: "/nonexistent/ca.crt".into(),
            ..ClientTls::default()
        };
        let error = grpc_endpoint("auth.endpoint", "https://auth:50051", None).unwrap_err();
        assert!(error.to_string().contains("auth.tls.ca_path"), "{error}");
        let error = grpc_endpoint("auth.endpoint", "http://auth:50051", Some(&tls)).unwrap_err();
        assert!(error.to_string().contains("auth.endpoint"), "{error}");
        assert!(error.to_string().contains("https"), "{error}");
        let error = grpc_endpoint("auth.endpoint", "https://auth:50051", Some(&tls)).unwrap_err();
        assert!(
            error.to_string().contains("auth.tls.ca_path: cannot read"),
            "{error}"
        );
        grpc_endpoint("auth.endpoint", "http://auth:50051", None).unwrap();
    }

    #[test]
    fn the_subject_common_name_is_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Firm");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "import-svc");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_common_name(certificate.der()).as_deref(),
            Some("import-svc")
        );
        assert_eq!(subject_common_name(b"not DER"), None);
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let tls = ClientTls {
            ca_path: "ca.crt".into(),
            cert_path: Some("client.crt".into()),
            ..ClientTls::default()
        };
        let error = tls.validate("audit.tls").unwrap_err();
        assert!(error.to_string().contains("audit.tls.cert_path"), "{error}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        let tls = ClientTls {
            ca_path: path,
            ..ClientTls::default()
        };
        let error = tls.read("amqp.tls").unwrap_err();
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
    }
}
