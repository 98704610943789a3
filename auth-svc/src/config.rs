//! auth-svc configuration: the shared service part plus what only this service needs.
//!
//! Environment variables use the prefix `AUTH_SVC_` (`AUTH_SVC_SERVICE__DATABASE__URL`).
//!
//! ```toml
//! public_base_url = "https://auth.firm.example"   # web callback: {public_base_url}/oauth/callback
//! active_key_id = "k1"
//! [[keys]]
//! id = "k1"
//! key = "<base64 of 32 random bytes>"              # or key_file = "/run/secrets/k1"
//! [clio.regions]
//! us = "https://app.clio.com"
//! [audit]
//! endpoint = "http://127.0.0.1:50053"
//! token = "<auth-svc's audit_writer credential>"
//! ```
//!
//! `Config::default()` is a local-development config without keys or an audit credential;
//! [`Validate`] refuses it, so the binary never starts like that (see `run`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use audit_outbox::OutboxConfig;
use base64::Engine;
use clio_api::RegionUrls;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_runtime::config::{ConfigError, ServiceConfig, Validate, http_base_url, positive};
use service_runtime::entrypoint::HasServiceConfig;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, logs, database, callers: the part every service shares.
    pub service: ServiceConfig,
    /// Where browsers reach this service; the web-flow redirect URI is
    /// `{public_base_url}/oauth/callback` and must be registered on the Clio app.
    pub public_base_url: String,
    pub clio: ClioConfig,
    /// Data keys for secrets at rest. Every key that encrypted something must stay listed
    /// until a rotation has re-encrypted it.
    pub keys: Vec<KeyConfig>,
    /// The key new secrets are encrypted with until a `RotateEncryptionKey` says otherwise.
    pub active_key_id: String,
    pub authorization: AuthorizationConfig,
    pub leases: LeaseConfig,
    pub refresh: RefreshConfig,
    pub revocation: RevocationConfig,
    /// Delivery of auth-svc's audit events (kept in its outbox) to audit-svc.
    pub audit: OutboxConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceConfig::local_defaults(50051, "clio_auth"),
            public_base_url: "http://127.0.0.1:50051".into(),
            clio: ClioConfig::default(),
            keys: Vec::new(),
            active_key_id: String::new(),
            authorization: AuthorizationConfig::default(),
            leases: LeaseConfig::default(),
            refresh: RefreshConfig::default(),
            revocation: RevocationConfig::default(),
            audit: OutboxConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate().map_err(|e| e.within("service"))?;
        http_base_url("public_base_url", &self.public_base_url)?;
        self.clio.regions.validate().map_err(|(region, problem)| {
            ConfigError::invalid(format!("clio.regions.{region}"), problem)
        })?;
        positive("clio.connect_timeout_ms", self.clio.connect_timeout_ms)?;
        positive("clio.request_timeout_ms", self.clio.request_timeout_ms)?;
        if self.keys.is_empty() {
            return Err(ConfigError::invalid(
                "keys",
                "at least one encryption key is required",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            key.material(i)?;
            if !ids.insert(key.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("keys[{i}].id"),
                    format!("{:?} is listed twice", key.id),
                ));
            }
        }
        if !ids.contains(self.active_key_id.as_str()) {
            return Err(ConfigError::invalid(
                "active_key_id",
                format!("{:?} is not one of the configured keys", self.active_key_id),
            ));
        }
        positive(
            "authorization.state_ttl_secs",
            self.authorization.state_ttl_secs,
        )?;
        positive("leases.ttl_secs", self.leases.ttl_secs)?;
        positive("leases.usage_flush_ms", self.leases.usage_flush_ms)?;
        if !(self.refresh.margin_ratio > 0.0 && self.refresh.margin_ratio < 1.0) {
            return Err(ConfigError::invalid(
                "refresh.margin_ratio",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        positive("refresh.interval_ms", self.refresh.interval_ms)?;
        positive("refresh.attempts", u64::from(self.refresh.attempts))?;
        positive(
            "refresh.failure_backoff_secs",
            self.refresh.failure_backoff_secs,
        )?;
        positive(
            "refresh.max_failure_backoff_secs",
            self.refresh.max_failure_backoff_secs,
        )?;
        positive(
            "revocation.retry_interval_ms",
            self.revocation.retry_interval_ms,
        )?;
        positive(
            "revocation.max_attempts",
            u64::from(self.revocation.max_attempts),
        )?;
        if !self.audit.has_credential() {
            return Err(ConfigError::invalid(
                "audit.token",
                "required: auth-svc's audit_writer credential for audit-svc (or an audit.tls client certificate audit-svc maps to it)",
            ));
        }
        self.audit.validate().map_err(|e| e.within("audit"))?;
        Ok(())
    }
}

impl HasServiceConfig for Config {
    fn service(&self) -> &ServiceConfig {
        &self.service
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClioConfig {
    /// Base URL per region (`us`, `eu`, `ca`, `au`); Clio's hosts by default.
    pub regions: RegionUrls,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

impl Default for ClioConfig {
    fn default() -> Self {
        ClioConfig {
            regions: RegionUrls::default(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
        }
    }
}

impl ClioConfig {
    pub fn http_settings(&self) -> clio_api::HttpSettings {
        clio_api::HttpSettings {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

/// One AES-256 data key: inline (`key`, base64) or in a file holding the base64 text.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    #[serde(default)]
    pub key: Option<SecretString>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "[REDACTED]"))
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// The longest key id: ids are written in front of every ciphertext.
pub const MAX_KEY_ID_LEN: usize = 32;

impl KeyConfig {
    /// The 32 key bytes, wiped when dropped. `index` places errors (`keys[1].key`).
    pub fn material(&self, index: usize) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
        if self.id.is_empty()
            || self.id.len() > MAX_KEY_ID_LEN
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                format!("keys[{index}].id"),
                format!("must be 1-{MAX_KEY_ID_LEN} characters of [A-Za-z0-9_-]"),
            ));
        }
        let (field, text) = match (&self.key, &self.key_file) {
            (Some(key), None) => (
                format!("keys[{index}].key"),
                Zeroizing::new(key.expose_secret().to_owned()),
            ),
            (None, Some(path)) => {
                let field = format!("keys[{index}].key_file");
                private_file(&field, path)?;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(&field, format!("cannot read {}: {e}", path.display()))
                })?;
                (field, Zeroizing::new(text))
            }
            _ => {
                return Err(ConfigError::invalid(
                    format!("keys[{index}]"),
                    "set exactly one of key and key_file",
                ));
            }
        };
        // The decode error never echoes the key text.
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| ConfigError::invalid(&field, "not valid base64"))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(ConfigError::invalid(
                &field,
                format!("must decode to 32 bytes, not {}", bytes.len()),
            ));
        }
        key.copy_from_slice(&bytes);
        Ok(key)
    }
}

/// A key file must be readable by its owner only: a data key that group or others can read
/// is as good as published. Checked on the file itself (a symlink is followed, as a secret
/// mount's is).
#[cfg(unix)]
fn private_file(field: &str, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| ConfigError::invalid(field, format!("cannot read {}: {e}", path.display())))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::invalid(
            field,
            format!(
                "{} has mode {mode:04o}: a key file must not be accessible to group or others (chmod 600)",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_file(_field: &str, _path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// How long a started authorization (its `state`) may be completed.
    pub state_ttl_secs: u64,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            state_ttl_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// A lease ends after this long, or when the token does, whichever is first.
    pub ttl_secs: u64,
    /// How often last-used times and aggregated TOKEN_LEASED events are written.
    pub usage_flush_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_secs: 300,
            usage_flush_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshConfig {
    /// Refresh proactively when this share of the token's lifetime is left...
    pub margin_ratio: f64,
    /// ...but never earlier than this before expiry (a 30-day token refreshes 1 h ahead).
    pub max_margin_secs: u64,
    /// A lease refreshes first when the token has less than this left.
    pub lease_min_remaining_secs: u64,
    /// How often the proactive refresher looks for tokens due.
    pub interval_ms: u64,
    /// Attempts per refresh when Clio fails transiently (5xx, timeouts).
    pub attempts: u32,
    pub backoff_ms: u64,
    /// After a failed refresh the proactive refresher leaves the connection alone this
    /// long, doubling per consecutive failure...
    pub failure_backoff_secs: u64,
    /// ...up to this.
    pub max_failure_backoff_secs: u64,
    /// Test-only fault point (never read from files or the environment): see
    /// [`CrashPoint`].
    #[serde(skip)]
    pub crash_after_store: CrashPoint,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            margin_ratio: 0.1,
            max_margin_secs: 3_600,
            lease_min_remaining_secs: 60,
            interval_ms: 30_000,
            attempts: 3,
            backoff_ms: 250,
            failure_backoff_secs: 60,
            max_failure_backoff_secs: 3_600,
            crash_after_store: CrashPoint::default(),
        }
    }
}

/// A test-only fault point: armed, the next refresh stops dead right after Clio answered
/// and its tokens were stored: it never returns, and the test then kills the process (its
/// runtime) there, so nothing after the store runs. Not configurable from files or the
/// environment.
#[derive(Clone, Default)]
pub struct CrashPoint(Arc<AtomicBool>);

impl CrashPoint {
    pub fn arm(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Disarms it; true when it was armed.
    pub fn fire(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl std::fmt::Debug for CrashPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.load(Ordering::Relaxed) {
            "CrashPoint(armed)"
        } else {
            "CrashPoint"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// How many connections an offboarding or app revocation revokes at once.
    pub concurrency: usize,
    /// How often the worker looks for deauthorizations to retry.
    pub retry_interval_ms: u64,
    /// First retry delay; doubles per attempt up to `max_backoff_secs`.
    pub first_retry_after_ms: u64,
    pub max_backoff_secs: u64,
    /// After this many failed attempts the token is dropped and the failure recorded.
    pub max_attempts: u32,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            concurrency: 16,
            retry_interval_ms: 5_000,
            first_retry_after_ms: 10_000,
            max_backoff_secs: 3_600,
            max_attempts: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            keys: vec![KeyConfig {
                id: "k1".into(),
                key: Some(SecretString::from(
                    base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
                )),
                key_file: None,
            }],
            active_key_id: "k1".into(),
            audit: OutboxConfig {
                token: Some(SecretString::from("audit-writer-credential")),
                ..OutboxConfig::default()
            },
            ..Config::default()
        }
    }

    #[test]
    fn a_complete_config_is_valid_and_the_default_is_not() {
        valid().validate().unwrap();
        let error = Config::default().validate().unwrap_err().to_string();
        assert!(error.contains("keys"), "{error}");
    }

    #[test]
    fn bad_values_name_their_field_without_echoing_keys() {
        let mut config = valid();
        config.keys[0].key = Some(SecretString::from("c2hvcnQ="));
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("keys[0].key") && !error.contains("c2hvcnQ"),
            "{error}"
        );

        let mut config = valid();
        config.active_key_id = "k9".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("active_key_id")
        );

        let mut config = valid();
        config.clio.regions.set(clio_api::Region::Eu, "not a url");
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("clio.regions.eu")
        );

        let mut config = valid();
        config.audit.token = None;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("audit.token")
        );

        let debug = format!("{:?}", valid());
        assert!(!debug.contains("audit-writer-credential"), "{debug}");
        assert!(!debug.contains(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])));
    }
}
