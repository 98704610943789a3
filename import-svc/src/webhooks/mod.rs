//! Near-real-time sync: Clio pushes each change of a subscribed resource to import-svc,
//! which writes it at once instead of waiting for the next incremental import.
//!
//! Why inside import-svc rather than a service of its own: a delivery is a record write
//! with exactly the importer's rules (the same tables, the same "an older version never
//! overwrites a newer one" upsert, the same deletion marking), and a targeted read needs
//! the same token leases, rate gates and app budget. A second service would be a second
//! writer of import-svc's schema. The receiver is still kept apart where it matters: its
//! own HTTP listener (`webhooks.listen`, the only port Clio reaches, normally behind the
//! firm's TLS ingress), one route, a body limit, and nothing done for a request before its
//! subscription is found and its signature checked.
//!
//! - [`manager`]: subscribe (`EnableWebhooks`), unsubscribe, and the upkeep loop: renew
//!   before expiry, remove the subscriptions of revoked connections, recreate one Clio
//!   dropped and close the gap with an incremental import, and catch up after import-svc
//!   was down.
//! - [`receiver`]: the handshake and signed deliveries; [`apply`]: a delivery's effect on
//!   the stored records; [`store`]: subscriptions and seen deliveries; [`sealing`]: Clio's
//!   shared secrets at rest; [`events`]: the audit events.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_runtime::config::ConfigError;

pub mod apply;
pub mod events;
pub mod manager;
pub mod receiver;
pub mod sealing;
pub mod store;

/// `[webhooks]`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The receiver's listener (`0.0.0.0:8443`); none: no receiver, and webhooks cannot be
    /// enabled.
    pub listen: Option<String>,
    /// The base URL Clio delivers to, through the firm's ingress
    /// (`https://hooks.firm.example`). Without it, `http://<the bound listen address>`
    /// (loopback tests only: Clio requires https).
    pub public_url: Option<String>,
    /// AES-256-GCM key, base64 of 32 bytes, sealing Clio's shared secrets in Postgres.
    pub secret_key: Option<SecretString>,
    /// How long a subscription is asked to live (Clio allows at most 31 days).
    pub lifetime_days: u32,
    /// A subscription expiring within this is renewed.
    pub renew_before_secs: u64,
    /// How often the upkeep loop renews, checks revocations and prunes.
    pub upkeep_interval_ms: u64,
    /// How often each subscription is checked at Clio between renewals (a suspended or
    /// vanished one is made again, and its gap read by an incremental import).
    pub verify_interval_secs: u64,
    /// How long a delivery's body is remembered to refuse it again.
    pub replay_window_secs: u64,
    /// Largest delivery body read.
    pub max_body_bytes: usize,
    /// At start, an incremental import for every subscribed connection: changes made while
    /// import-svc was down (and Clio gave up delivering) are read.
    pub catch_up_on_start: bool,
    /// Refused requests audited per subscription per minute; more are only counted.
    pub refusals_audited_per_minute: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            listen: None,
            public_url: None,
            secret_key: None,
            lifetime_days: 30,
            renew_before_secs: 7 * 24 * 3_600,
            upkeep_interval_ms: 60_000,
            verify_interval_secs: 3_600,
            replay_window_secs: 7 * 24 * 3_600,
            max_body_bytes: 1 << 20,
            catch_up_on_start: true,
            refusals_audited_per_minute: 20,
        }
    }
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("lifetime_days", &self.lifetime_days)
            .field("renew_before_secs", &self.renew_before_secs)
            .field("upkeep_interval_ms", &self.upkeep_interval_ms)
            .field("verify_interval_secs", &self.verify_interval_secs)
            .field("replay_window_secs", &self.replay_window_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("catch_up_on_start", &self.catch_up_on_start)
            .finish()
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_none() {
            return Ok(());
        }
        let key = self.secret_key.as_ref().ok_or_else(|| {
            ConfigError::invalid(
                "webhooks.secret_key",
                "is required with webhooks.listen: Clio's shared secrets are sealed with it",
            )
        })?;
        sealing::Sealer::from_base64(key.expose_secret())
            .map_err(|problem| ConfigError::invalid("webhooks.secret_key", problem))?;
        if !(1..=31).contains(&self.lifetime_days) {
            return Err(ConfigError::invalid(
                "webhooks.lifetime_days",
                format!(
                    "{} is not between 1 and 31 (Clio's most)",
                    self.lifetime_days
                ),
            ));
        }
        if self.renew_before_secs >= u64::from(self.lifetime_days) * 86_400 {
            return Err(ConfigError::invalid(
                "webhooks.renew_before_secs",
                "must be shorter than webhooks.lifetime_days, or every upkeep renews",
            ));
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::invalid("webhooks.public_url", format!("{e}")))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(ConfigError::invalid(
                    "webhooks.public_url",
                    "must be an https URL",
                ));
            }
        }
        for (key, value) in [
            ("webhooks.upkeep_interval_ms", self.upkeep_interval_ms),
            ("webhooks.replay_window_secs", self.replay_window_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    pub fn lifetime(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.lifetime_days))
    }

    pub fn renew_before(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.renew_before_secs).unwrap_or(i64::MAX))
    }

    pub fn upkeep_interval(&self) -> Duration {
        Duration::from_millis(self.upkeep_interval_ms)
    }
}

/// Clio's webhook model for a resource import-svc stores; `None` for one Clio sends no
/// webhooks of (users).
pub fn model_of(resource: scope_catalog::Resource) -> Option<&'static str> {
    use scope_catalog::Resource;
    match resource {
        Resource::Contacts => Some("contact"),
        Resource::Matters => Some("matter"),
        Resource::CalendarEntries => Some("calendar_entry"),
        Resource::Activities => Some("activity"),
        Resource::Users => None,
    }
}

/// SHA-256 of `bytes` (path tokens and delivery bodies are kept only as their hash).
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}
