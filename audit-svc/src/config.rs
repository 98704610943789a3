//! audit-svc configuration: the shared service part plus what only this service needs.
//!
//! Environment variables use the prefix `AUDIT_SVC_` (`AUDIT_SVC_SERVICE__DATABASE__URL`).
//!
//! ```toml
//! platform_tenant = "platform"          # tenant of this service's own ACCESS_DENIED events
//! [signing]
//! key = "<base64 or hex of a 32-byte Ed25519 seed>"   # or key_file = "/run/secrets/audit-key"
//! trusted_public_keys = ["<base64 public key of a retired signing key>"]
//! [checkpoints]
//! every_events = 1000                   # sign the head after this many events per tenant
//! interval_ms = 60000                   # ... or this long after the last checkpoint
//! [watch]
//! poll_interval_ms = 1000               # fallback when a notification is missed
//! [reports]
//! zombie_idle_days = 90
//! offboarding_limit_minutes = 120
//! ```
//!
//! `Config::default()` has no signing key: [`Validate`] refuses it, so the binary never
//! starts like that, while in-process runs (tests, the e2e suite) sign with an ephemeral
//! key and say so in the log.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::config::{ConfigError, ServiceConfig, Validate, positive};
use service_runtime::entrypoint::HasServiceConfig;

/// The prefix of the environment variables the service and its subcommands read.
pub const ENV_PREFIX: &str = "AUDIT_SVC_";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, logs, database, callers: the part every service shares.
    pub service: ServiceConfig,
    /// The tenant of events about the platform rather than a firm (calls this service
    /// refused).
    pub platform_tenant: String,
    pub signing: SigningConfig,
    pub checkpoints: CheckpointConfig,
    pub watch: WatchConfig,
    pub reports: ReportConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceConfig::local_defaults(50053, "clio_audit"),
            platform_tenant: "platform".into(),
            signing: SigningConfig::default(),
            checkpoints: CheckpointConfig::default(),
            watch: WatchConfig::default(),
            reports: ReportConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate().map_err(|e| e.within("service"))?;
        if self.platform_tenant.trim().is_empty() {
            return Err(ConfigError::invalid("platform_tenant", "must not be empty"));
        }
        if self.signing.key.is_none() && self.signing.key_file.is_none() {
            return Err(ConfigError::invalid(
                "signing.key",
                "required (or signing.key_file): the Ed25519 seed checkpoints are signed with",
            ));
        }
        // Parse the key now so a bad one stops start-up naming the field.
        crate::signing::Signer::from_config(&self.signing)?;
        crate::signing::TrustedKeys::parse(&self.signing.trusted_public_keys)?;
        positive("checkpoints.every_events", self.checkpoints.every_events)?;
        positive("checkpoints.interval_ms", self.checkpoints.interval_ms)?;
        positive("watch.poll_interval_ms", self.watch.poll_interval_ms)?;
        positive(
            "reports.zombie_idle_days",
            u64::from(self.reports.zombie_idle_days),
        )?;
        positive(
            "reports.offboarding_limit_minutes",
            self.reports.offboarding_limit_minutes,
        )?;
        Ok(())
    }
}

impl HasServiceConfig for Config {
    fn service(&self) -> &ServiceConfig {
        &self.service
    }
}

/// The Ed25519 key checkpoints are signed with, and older public keys still trusted.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// The 32-byte seed as base64 or 64 hex digits.
    pub key: Option<SecretString>,
    /// A file holding the seed in the same text form (mounted secret).
    pub key_file: Option<PathBuf>,
    /// Base64 public keys of retired signing keys, so checkpoints they signed still verify
    /// after a rotation.
    pub trusted_public_keys: Vec<String>,
}

impl std::fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningConfig")
            .field("key", &self.key.as_ref().map(|_| "[REDACTED]"))
            .field("key_file", &self.key_file)
            .field("trusted_public_keys", &self.trusted_public_keys)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// A tenant's head is signed in the append that takes it this many events past its
    /// last checkpoint.
    pub every_events: u64,
    /// Heads that moved but did not reach `every_events` are signed this often.
    pub interval_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_events: 1_000,
            interval_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Watchers are woken by Postgres notifications; they also look this often, so a
    /// notification lost while the listener reconnects delays events but never drops them.
    pub poll_interval_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            poll_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Idle days after which a live connection is a zombie, when a request names none.
    pub zombie_idle_days: u32,
    /// The offboarding protocol: every connection revoked within this time.
    pub offboarding_limit_minutes: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            zombie_idle_days: 90,
            offboarding_limit_minutes: 120,
        }
    }
}
