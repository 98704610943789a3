//! A producer's settings for delivering its outbox to audit-svc, as its config file spells
//! them (every producer nests them under `[audit]`):
//!
//! ```toml
//! [audit]
//! endpoint = "http://127.0.0.1:50053"
//! token = "<this service's audit_writer credential>"
//!
//! # TLS to audit-svc (endpoint must then be https://); with a client certificate that
//! # audit-svc maps to this writer, the token may be left out.
//! [audit.tls]
//! ca_path = "/etc/clio-connect/tls/ca.crt"
//! cert_path = "/etc/clio-connect/tls/auth-svc.crt"
//! key_path = "/etc/clio-connect/tls/auth-svc.key"
//! ```

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_runtime::config::{ClientTls, ConfigError, Validate, http_base_url, positive};

use crate::relay::{MAX_BATCH, RelayConfig};

/// First retry delay after a failed delivery; doubles up to `max_backoff_ms`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long delivered rows stay in the outbox (audit-svc holds them by then).
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3_600);

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// audit-svc's gRPC address.
    pub endpoint: String,
    /// This service's `audit_writer` credential at audit-svc. Without one the events are
    /// still written to the outbox and wait there (a warning says so at start), unless
    /// the service requires one.
    pub token: Option<SecretString>,
    /// TLS to audit-svc (`[audit.tls]`); required for an `https://` endpoint.
    pub tls: Option<ClientTls>,
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    pub max_backoff_ms: u64,
    pub request_timeout_ms: u64,
    /// The tenant of events about the platform rather than a firm (denied calls, key
    /// rotations, a job whose firm is unknown).
    pub platform_tenant: String,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            endpoint: "http://127.0.0.1:50053".into(),
            token: None,
            tls: None,
            poll_interval_ms: 1_000,
            batch_size: 500,
            max_backoff_ms: 30_000,
            request_timeout_ms: 10_000,
            platform_tenant: "platform".into(),
        }
    }
}

/// Field names are relative (`batch_size`): the owner places them with
/// [`ConfigError::within`] (`audit.batch_size`).
impl Validate for OutboxConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        http_base_url("endpoint", &self.endpoint)?;
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "token",
                "must not be empty (leave it out to keep events in the outbox)",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate("tls")?;
        }
        positive("poll_interval_ms", self.poll_interval_ms)?;
        positive("max_backoff_ms", self.max_backoff_ms)?;
        positive("request_timeout_ms", self.request_timeout_ms)?;
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(ConfigError::invalid(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        if self.platform_tenant.trim().is_empty() {
            return Err(ConfigError::invalid("platform_tenant", "must not be empty"));
        }
        Ok(())
    }
}

impl OutboxConfig {
    /// Whether this producer can prove who it is to audit-svc: a bearer token, or a
    /// client certificate audit-svc maps to a writer.
    pub fn has_credential(&self) -> bool {
        self.token.is_some()
            || self
                .tls
                .as_ref()
                .is_some_and(ClientTls::has_client_certificate)
    }

    /// What the [`Relay`](crate::Relay) runs with; `None` without a credential.
    pub fn relay_config(&self) -> Option<RelayConfig> {
        if !self.has_credential() {
            return None;
        }
        Some(RelayConfig {
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
            tls: self.tls.clone(),
            batch_size: self.batch_size,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            min_backoff: MIN_BACKOFF,
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            keep_delivered: KEEP_DELIVERED,
        })
    }
}

impl std::fmt::Debug for OutboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("tls", &self.tls)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("batch_size", &self.batch_size)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("platform_tenant", &self.platform_tenant)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(config: &OutboxConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn bad_settings_name_their_field() {
        assert!(OutboxConfig::default().validate().is_ok());
        for (config, field) in [
            (
                OutboxConfig {
                    endpoint: "not a url".into(),
                    ..OutboxConfig::default()
                },
                "endpoint",
            ),
            (
                OutboxConfig {
                    endpoint: "http://audit:50053/?x=1".into(),
                    ..OutboxConfig::default()
                },
                "endpoint",
            ),
            (
                OutboxConfig {
                    token: Some(SecretString::from(" ")),
                    ..OutboxConfig::default()
                },
                "token",
            ),
            (
                OutboxConfig {
                    request_timeout_ms: 0,
                    ..OutboxConfig::default()
                },
                "request_timeout_ms",
            ),
            (
                OutboxConfig {
                    batch_size: MAX_BATCH + 1,
                    ..OutboxConfig::default()
                },
                "batch_size",
            ),
        ] {
            let error = error_of(&config);
            assert!(error.contains(&format!(": {field}:")), "{error}");
        }
        let within = OutboxConfig {
            batch_size: 0,
            ..OutboxConfig::default()
        }
        .validate()
        .unwrap_err()
        .within("audit")
        .to_string();
        assert!(within.contains("audit.batch_size"), "{within}");
    }

    #[test]
    fn the_relay_runs_only_with_a_credential_that_never_shows_in_debug_output() {
        assert!(OutboxConfig::default().relay_config().is_none());
        let config = OutboxConfig {
            token: Some(SecretString::from("audit-writer-credential")),
            poll_interval_ms: 50,
            ..OutboxConfig::default()
        };
        let relay = config.relay_config().unwrap();
        assert_eq!(relay.poll_interval, Duration::from_millis(50));
        assert_eq!(relay.batch_size, 500);
        let debug = format!("{config:?} {relay:?}");
        assert!(!debug.contains("audit-writer-credential"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
    }
}
