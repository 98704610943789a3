//! Layered, typed configuration that fails fast naming the bad field.
//!
//! Layers, later ones winning: serde defaults, an optional TOML file, then environment
//! variables with the service's prefix (`AUTH_SVC_SERVICE__DATABASE__URL` is
//! `service.database.url`; `__` separates nesting levels). Tests build config structs in
//! memory instead.
//!
//! Every struct denies unknown keys, so a misspelt setting stops start-up instead of being
//! silently ignored. That is why a service's config nests the shared part under `service`
//! rather than flattening it: serde cannot deny unknown keys beside `flatten`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::caller_auth::Role;
use crate::telemetry::{LogFormat, TracingConfig};
pub use crate::tls::{ClientTls, TlsConfig};

/// Why configuration was refused. Every variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be parsed (figment's message names the key and its source).
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {field}: {problem}")]
    Invalid { field: String, problem: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with its field path under `section` (`database.url` becomes
    /// `service.database.url`), so the message names the key as the file spells it.
    pub fn within(self, section: &str) -> Self {
        match self {
            ConfigError::Invalid { field, problem } => ConfigError::Invalid {
                field: format!("{section}.{field}"),
                problem,
            },
            other => other,
        }
    }
}

/// Implemented by each service's top-level config: checks that go beyond types.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Refuses anything but an `http` or `https` URL without query or fragment (a base URL
/// that paths are appended to, or a gRPC endpoint), naming `field`.
pub fn http_base_url(field: &str, raw: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw)
        .map_err(|e| ConfigError::invalid(field, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(field, "scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            field,
            "must not carry a query or fragment",
        ));
    }
    Ok(())
}

/// Refuses a zero count or interval, naming `field`.
pub fn positive(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(field, "must be greater than 0"));
    }
    Ok(())
}

/// Loads `T` from defaults, `file` (if given) and `<env_prefix>*` variables, then validates.
pub fn load<T: DeserializeOwned + Validate>(
    env_prefix: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::invalid(
                "config file",
                format!("{} does not exist", file.display()),
            ));
        }
        figment = figment.merge(Toml::file(file));
    }
    // Keys are lowercased so errors spell them as the TOML file does (`service.listen`).
    figment = figment.merge(
        Env::prefixed(env_prefix)
            // `<PREFIX>CONFIG` names the file (entrypoint), it is not a setting.
            .ignore(&["CONFIG"])
            .map(|key| key.as_str().to_ascii_lowercase().into())
            .split("__"),
    );
    let config: T = figment
        .extract()
        .map_err(|e| ConfigError::Parse(flatten_figment(e)))?;
    config.validate()?;
    Ok(config)
}

/// Figment errors can carry several; each is shown as `key.path: problem (source)`, with
/// the key spelt as in the TOML file whatever layer the value came from.
fn flatten_figment(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            if e.path.is_empty() {
                return e.to_string();
            }
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("{}: {}{source}", e.path.join("."), e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What every service has: where it listens, how it logs, its database, who may call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// gRPC (HTTP/2) and the plain HTTP endpoints (`/metrics`, callbacks) share this port.
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// `RUST_LOG` syntax; the `RUST_LOG` variable wins when set.
    pub log_filter: String,
    /// `[service.tracing]`: where spans are exported (OTLP), if anywhere.
    pub tracing: TracingConfig,
    pub database: DatabaseConfig,
    pub callers: Vec<CallerCredential>,
    pub tls: Option<TlsConfig>,
    /// How often dependency checks update gRPC health.
    pub health_interval_ms: u64,
    /// How long in-flight work may take to finish after shutdown starts.
    pub shutdown_grace_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            tracing: TracingConfig::default(),
            database: DatabaseConfig::default(),
            callers: Vec::new(),
            tls: None,
            health_interval_ms: 2_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl ServiceConfig {
    /// Defaults for one service: its conventional local port and database name.
    pub fn local_defaults(port: u16, database: &str) -> Self {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            database: DatabaseConfig {
                url: SecretString::from(format!("postgres://postgres@127.0.0.1:5432/{database}")),
                ..DatabaseConfig::default()
            },
            ..ServiceConfig::default()
        }
    }
}

impl Validate for ServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.tracing.validate()?;
        if self.health_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "health_interval_ms",
                "must be greater than 0",
            ));
        }
        let mut names = HashSet::new();
        let mut subjects = HashSet::new();
        for (i, caller) in self.callers.iter().enumerate() {
            self.validate_caller(i, caller, &mut names, &mut subjects)?;
        }
        if let Some(tls) = &self.tls {
            validate_tls_files(tls)?;
        }
        Ok(())
    }
}

impl ServiceConfig {
    /// `callers[i]`: a unique name, a credential (token or client certificate subject),
    /// roles, and tenants when limited to some. `names` and `subjects` are the earlier
    /// callers'.
    fn validate_caller<'a>(
        &self,
        i: usize,
        caller: &'a CallerCredential,
        names: &mut HashSet<&'a str>,
        subjects: &mut HashSet<&'a str>,
    ) -> Result<(), ConfigError> {
        if caller.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("callers[{i}].name"),
                "must not be empty",
            ));
        }
        if !names.insert(caller.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("callers[{i}].name"),
                format!("{:?} is listed twice", caller.name),
            ));
        }
        match (&caller.token, &caller.tls_subject) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("callers[{i}].token"),
                    "must be given (or tls_subject, to identify the caller by its client certificate)",
                ));
            }
            (Some(token), _) if token.expose_secret().len() < 16 => {
                return Err(ConfigError::invalid(
                    format!("callers[{i}].token"),
                    "must be at least 16 characters",
                ));
            }
            _ => {}
        }
        if let Some(subject) = &caller.tls_subject {
            self.validate_tls_subject(i, subject, subjects)?;
        }
        if caller.roles.is_empty() {
            return Err(ConfigError::invalid(
                format!("callers[{i}].roles"),
                "must not be empty",
            ));
        }
        if let Some(tenants) = &caller.tenants
            && (tenants.is_empty() || tenants.iter().any(|t| t.trim().is_empty()))
        {
            return Err(ConfigError::invalid(
                format!("callers[{i}].tenants"),
                "must list at least one non-empty tenant (leave it out for every tenant)",
            ));
        }
        Ok(())
    }

    /// `callers[i].tls_subject`: not empty, unique, and verifiable (a client CA is set).
    fn validate_tls_subject<'a>(
        &self,
        i: usize,
        subject: &'a str,
        subjects: &mut HashSet<&'a str>,
    ) -> Result<(), ConfigError> {
        if subject.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("callers[{i}].tls_subject"),
                "must not be empty",
            ));
        }
        if !subjects.insert(subject) {
            return Err(ConfigError::invalid(
                format!("callers[{i}].tls_subject"),
                format!("{subject:?} is listed twice"),
            ));
        }
        // Without a client CA no certificate is asked for, let alone verified.
        if self
            .tls
            .as_ref()
            .is_none_or(|tls| tls.client_ca_path.is_none())
        {
            return Err(ConfigError::invalid(
                format!("callers[{i}].tls_subject"),
                "needs service.tls.client_ca_path, which verifies client certificates",
            ));
        }
        Ok(())
    }
}

/// The service's certificate and key files exist.
fn validate_tls_files(tls: &TlsConfig) -> Result<(), ConfigError> {
    for (field, path) in [
        ("tls.cert_path", &tls.cert_path),
        ("tls.key_path", &tls.key_path),
    ] {
        if !path.exists() {
            return Err(ConfigError::invalid(
                field,
                format!("{} does not exist", path.display()),
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`. Secret because it may hold a password.
    pub url: SecretString,
    pub max_connections: u32,
    /// Create the database when it does not exist (local stacks and tests).
    pub create_if_missing: bool,
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/postgres"),
            max_connections: 10,
            create_if_missing: true,
            acquire_timeout_ms: 5_000,
        }
    }
}

impl DatabaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(self.url.expose_secret()).map_err(|e| {
            // The parse error never echoes the value: it may hold a password.
            ConfigError::invalid("database.url", format!("not a URL ({e})"))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(ConfigError::invalid(
                "database.url",
                format!("scheme must be postgres, not {:?}", url.scheme()),
            ));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(ConfigError::invalid("database.url", "must name a database"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The URL with any password replaced, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("create_if_missing", &self.create_if_missing)
            .finish()
    }
}

/// Replaces the password (and any query string, which may carry one) of a URL.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            if url.query().is_some() {
                url.set_query(Some("REDACTED"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

/// A bearer service credential and the roles it carries.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerCredential {
    pub name: String,
    /// The bearer credential this caller sends. May be left out when `tls_subject` is
    /// given: the verified client certificate then identifies the caller.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// The common name (CN) of the client certificate that identifies this caller without
    /// a bearer token (mTLS; needs `service.tls.client_ca_path`, which verifies it).
    #[serde(default)]
    pub tls_subject: Option<String>,
    pub roles: Vec<Role>,
    /// The firms (tenants) whose data this caller may touch; absent means every tenant.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
}

impl std::fmt::Debug for CallerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerCredential")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("tls_subject", &self.tls_subject)
            .field("roles", &self.roles)
            .field("tenants", &self.tenants)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        service: ServiceConfig,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            self.service.validate()
        }
    }

    fn from_toml(text: &str) -> Result<Sample, ConfigError> {
        let config: Sample = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(flatten_figment(e)))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid() {
        from_toml("").unwrap();
    }

    #[test]
    fn a_bad_value_names_its_field() {
        let err = from_toml("[service]\nlisten = \"not-an-address\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service.listen"), "{err}");

        let err = from_toml("[service.database]\nmax_connections = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_connections"), "{err}");

        let err = from_toml("[service.database]\nurl = \"mysql://x/y\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn unknown_roles_and_short_tokens_are_refused() {
        let err = from_toml(
            "[[service.callers]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\nroles = [\"wizard\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("wizard"), "{err}");

        let err =
            from_toml("[[service.callers]]\nname = \"a\"\ntoken = \"short\"\nroles = [\"import\"]")
                .unwrap_err()
                .to_string();
        assert!(err.contains("callers[0].token"), "{err}");
    }

    #[test]
    fn a_caller_named_by_certificate_needs_a_verifying_client_ca() {
        let err = from_toml("[[service.callers]]\nname = \"a\"\nroles = [\"import\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("callers[0].token"), "{err}");

        let err = from_toml(
            "[[service.callers]]\nname = \"a\"\ntls_subject = \"import-svc\"\nroles = [\"import\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("callers[0].tls_subject"), "{err}");
        assert!(err.contains("client_ca_path"), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_or_errors() {
        let config = from_toml(
            "[service.database]\nurl = \"postgres://u:hunter2hunter2@h/db\"\n\
             [[service.callers]]\nname = \"a\"\ntoken = \"sekrit-sekrit-sekrit\"\nroles = [\"import\"]",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("sekrit"), "{debug}");

        let err = from_toml("[service.database]\nurl = \"postgres://u:hunter2hunter2@h\"")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
