//! import-svc configuration: the shared service part plus the queue, auth-svc, Clio,
//! retention and audit settings.
//!
//! Environment variables use the prefix `IMPORT_SVC_` (`IMPORT_SVC_AMQP__URL`).

use std::collections::BTreeMap;

use audit_outbox::OutboxConfig;
use scope_catalog::Resource;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_runtime::config::{ClientTls, ConfigError, ServiceConfig, Validate, redact_url};
use service_runtime::entrypoint::HasServiceConfig;

use crate::suggestions::rules::TenantRules;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, logs, database, callers: the part every service shares.
    pub service: ServiceConfig,
    pub amqp: AmqpConfig,
    pub auth: AuthClientConfig,
    pub importer: ImporterConfig,
    pub retention: RetentionConfig,
    /// Billing suggestions from connections' calendars.
    pub suggestions: SuggestionsConfig,
    /// Clio's limit on each app across all its tokens, shared by every replica.
    pub app_budget: crate::app_budget::AppBudgetConfig,
    /// Near-real-time sync from Clio's webhooks: the receiver and its subscriptions.
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// Delivery of import-svc's audit events (kept in its outbox) to audit-svc. Without a
    /// `token` the events wait in the outbox.
    pub audit: OutboxConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceConfig::local_defaults(50052, "clio_import"),
            amqp: AmqpConfig::default(),
            auth: AuthClientConfig::default(),
            importer: ImporterConfig::default(),
            retention: RetentionConfig::default(),
            suggestions: SuggestionsConfig::default(),
            app_budget: crate::app_budget::AppBudgetConfig::default(),
            webhooks: crate::webhooks::WebhooksConfig::default(),
            audit: OutboxConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate().map_err(|e| e.within("service"))?;
        self.amqp.validate()?;
        self.auth.validate()?;
        self.importer.validate()?;
        // The broker hands a consumer at most `prefetch` jobs: slots beyond it never fill.
        if usize::from(self.amqp.prefetch) < self.importer.max_concurrent_jobs {
            return Err(ConfigError::invalid(
                "amqp.prefetch",
                format!(
                    "is {} but importer.max_concurrent_jobs is {}: only {} jobs would ever \
                     run at once; raise amqp.prefetch to at least importer.max_concurrent_jobs",
                    self.amqp.prefetch, self.importer.max_concurrent_jobs, self.amqp.prefetch
                ),
            ));
        }
        self.retention.validate()?;
        self.suggestions.validate()?;
        self.app_budget.validate()?;
        self.webhooks.validate()?;
        self.audit.validate().map_err(|e| e.within("audit"))
    }
}

impl HasServiceConfig for Config {
    fn service(&self) -> &ServiceConfig {
        &self.service
    }
}

/// RabbitMQ: where jobs come from and where events and rejects go.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (secret: may carry a password).
    pub url: SecretString,
    /// Prepended to every exchange and queue name (tests use a unique one each).
    pub prefix: String,
    /// Deliveries a consumer holds unacknowledged at once: its running jobs and the window
    /// its scheduler chooses the next job from (more than `importer.max_concurrent_jobs`,
    /// so a connection arriving behind another's backlog is seen).
    pub prefetch: u16,
    /// Deliveries of one message before the broker dead-letters it (a job that crashes the
    /// consumer every time must not loop forever).
    pub delivery_limit: u32,
    /// Delay before reconnecting after the broker goes away.
    pub reconnect_delay_ms: u64,
    /// Delay tiers (one retry queue each) a job waits out while a dependency (auth-svc,
    /// Postgres, audit-svc) is down: the n-th retry waits the n-th delay, the last one
    /// repeats until `importer.max_outage_secs`. Retries never spend the delivery limit.
    pub retry_delays_ms: Vec<u64>,
    /// How long a deferred job waits in its delay tier before it is offered again: a
    /// connection's jobs beyond those it may run (and one waiting) are parked this long,
    /// so a backlog never fills the prefetch window (see `queue::scheduler`).
    pub defer_delay_ms: u64,
    /// The wait of a job deferred again (a connection working through a backlog): longer,
    /// so a backlog of n jobs republishes about n / this many messages a second, not n / 5.
    pub max_defer_delay_ms: u64,
    /// How long a publish waits for the broker's confirm before it counts as failed.
    pub confirm_timeout_ms: u64,
    /// TLS to the broker (`[amqp.tls]`); required for an `amqps://` URL. The broker's
    /// certificate must name the URL's host (`domain` cannot override it here).
    pub tls: Option<ClientTls>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: String::new(),
            prefetch: 16,
            delivery_limit: 5,
            reconnect_delay_ms: 1_000,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 300_000],
            defer_delay_ms: 5_000,
            max_defer_delay_ms: 30_000,
            confirm_timeout_ms: 10_000,
            tls: None,
        }
    }
}

impl AmqpConfig {
    /// Every delay tier to declare: the retry delays and the deferral delay (one queue
    /// each; a delay that is both is one queue).
    pub fn delay_tiers_ms(&self) -> Vec<u64> {
        let mut tiers = self.retry_delays_ms.clone();
        tiers.push(self.defer_delay_ms);
        tiers.push(self.max_defer_delay_ms);
        tiers.sort_unstable();
        tiers.dedup();
        tiers
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(self.url.expose_secret())
            .map_err(|e| ConfigError::invalid("amqp.url", format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "amqp" | "amqps") {
            return Err(ConfigError::invalid(
                "amqp.url",
                "scheme must be amqp or amqps",
            ));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid(
                "amqp.prefetch",
                "must be greater than 0",
            ));
        }
        if self.delivery_limit == 0 {
            return Err(ConfigError::invalid(
                "amqp.delivery_limit",
                "must be greater than 0",
            ));
        }
        if self.defer_delay_ms == 0 || self.defer_delay_ms > i32::MAX as u64 {
            return Err(ConfigError::invalid(
                "amqp.defer_delay_ms",
                format!(
                    "{} is not between 1 and {} ms",
                    self.defer_delay_ms,
                    i32::MAX
                ),
            ));
        }
        if self.max_defer_delay_ms < self.defer_delay_ms
            || self.max_defer_delay_ms > i32::MAX as u64
        {
            return Err(ConfigError::invalid(
                "amqp.max_defer_delay_ms",
                format!(
                    "{} is not between amqp.defer_delay_ms ({}) and {} ms",
                    self.max_defer_delay_ms,
                    self.defer_delay_ms,
                    i32::MAX
                ),
            ));
        }
        if self.retry_delays_ms.is_empty() {
            return Err(ConfigError::invalid(
                "amqp.retry_delays_ms",
                "must list at least one delay",
            ));
        }
        if let Some(bad) = self
            .retry_delays_ms
            .iter()
            .find(|d| **d == 0 || **d > i32::MAX as u64)
        {
            return Err(ConfigError::invalid(
                "amqp.retry_delays_ms",
                format!("{bad} is not between 1 and {} ms", i32::MAX),
            ));
        }
        if self.confirm_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "amqp.confirm_timeout_ms",
                "must be greater than 0",
            ));
        }
        match (url.scheme() == "amqps", &self.tls) {
            (true, None) => {
                return Err(ConfigError::invalid(
                    "amqp.tls.ca_path",
                    "amqp.url is amqps, so the CA that signs the broker must be given",
                ));
            }
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    "amqp.url",
                    "amqp.tls is set, so the URL must be amqps://",
                ));
            }
            (_, Some(tls)) => {
                tls.validate("amqp.tls")?;
                if tls.domain.is_some() {
                    return Err(ConfigError::invalid(
                        "amqp.tls.domain",
                        "not supported for the broker: its certificate must name the URL's host",
                    ));
                }
            }
            (false, None) => {}
        }
        Ok(())
    }

    /// The TLS settings lapin connects with: the CA bundle and any client certificate.
    pub fn lapin_tls(&self) -> Result<lapin::tcp::OwnedTLSConfig, ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(lapin::tcp::OwnedTLSConfig::default());
        };
        let files = tls.read("amqp.tls")?;
        let cert_chain = String::from_utf8(files.ca_pem)
            .map_err(|_| ConfigError::invalid("amqp.tls.ca_path", "is not PEM text"))?;
        Ok(lapin::tcp::OwnedTLSConfig {
            identity: files
                .identity
                .map(|identity| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: identity.cert_pem,
                    key: identity.key_pem,
                }),
            cert_chain: Some(cert_chain),
        })
    }

    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("delivery_limit", &self.delivery_limit)
            .field("reconnect_delay_ms", &self.reconnect_delay_ms)
            .field("retry_delays_ms", &self.retry_delays_ms)
            .field("defer_delay_ms", &self.defer_delay_ms)
            .field("max_defer_delay_ms", &self.max_defer_delay_ms)
            .field("confirm_timeout_ms", &self.confirm_timeout_ms)
            .field("tls", &self.tls)
            .finish()
    }
}

/// How import-svc reaches auth-svc for token leases.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthClientConfig {
    pub endpoint: String,
    /// import-svc's bearer credential at auth-svc (role `import`). May be left out when
    /// `tls` carries a client certificate that auth-svc maps to import-svc.
    pub token: Option<SecretString>,
    /// TLS to auth-svc (`[auth.tls]`); required for an `https://` endpoint.
    pub tls: Option<ClientTls>,
}

impl Default for AuthClientConfig {
    fn default() -> Self {
        AuthClientConfig {
            endpoint: "http://127.0.0.1:50051".into(),
            token: None,
            tls: None,
        }
    }
}

impl AuthClientConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        url::Url::parse(&self.endpoint)
            .map_err(|e| ConfigError::invalid("auth.endpoint", format!("not a URL ({e})")))?;
        if let Some(tls) = &self.tls {
            tls.validate("auth.tls")?;
        }
        let has_certificate = self
            .tls
            .as_ref()
            .is_some_and(ClientTls::has_client_certificate);
        if self.token.is_none() && !has_certificate {
            return Err(ConfigError::invalid(
                "auth.token",
                "required: import-svc's credential at auth-svc (or an auth.tls client certificate auth-svc maps to it)",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for AuthClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClientConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// How jobs call Clio.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImporterConfig {
    /// Jobs running at once in this process (each holds one delivery).
    pub max_concurrent_jobs: usize,
    /// Jobs of one connection running at once, across all replicas: its token's rate
    /// limit is one budget, and jobs sharing it only slow each other.
    pub max_jobs_per_connection: usize,
    /// Records per Clio page (Clio allows 1–200).
    pub page_size: u32,
    pub request_timeout_ms: u64,
    /// Attempts for one page on 5xx, timeouts and dropped connections before the job fails.
    pub max_page_attempts: u32,
    /// First backoff after a transient failure; doubles with jitter, capped at 30 s.
    pub backoff_base_ms: u64,
    /// Requests kept in reserve below Clio's remaining count, so concurrent callers of the
    /// same token never tip it over the limit.
    pub rate_limit_reserve: u32,
    /// Overlap subtracted from the high-water mark of an incremental import, to catch
    /// records updated in the same second as the last one seen.
    pub incremental_overlap_secs: i64,
    /// How long a job keeps waiting out a dependency outage (through the retry queues)
    /// before it fails, visibly, with the last reason.
    pub max_outage_secs: u64,
    /// How often the reconciler looks for jobs left non-final with nothing working on them.
    pub reconcile_interval_ms: u64,
    /// A queued or running job untouched this long, not locked by a worker and not waiting
    /// in a retry queue, has lost its message: the reconciler publishes it again.
    pub reconcile_after_secs: u64,
    /// Re-publications of one job before the reconciler gives up and dead-letters it.
    pub reconcile_max_republish: u32,
    /// Largest Clio record (its JSON text, in bytes) the importer stores; a larger one is
    /// skipped and listed in `skipped_records`, and the rest of its page is stored.
    pub max_record_bytes: usize,
    /// Largest Clio response body read for one page; a larger one fails the job (the body
    /// is read in chunks and never buffered past this).
    pub max_page_bytes: u64,
}

impl Default for ImporterConfig {
    fn default() -> Self {
        ImporterConfig {
            max_concurrent_jobs: 4,
            max_jobs_per_connection: 1,
            page_size: 200,
            request_timeout_ms: 30_000,
            max_page_attempts: 8,
            backoff_base_ms: 200,
            rate_limit_reserve: 0,
            incremental_overlap_secs: 1,
            max_outage_secs: 3_600,
            reconcile_interval_ms: 60_000,
            reconcile_after_secs: 600,
            reconcile_max_republish: 3,
            max_record_bytes: 1 << 20,
            max_page_bytes: 32 << 20,
        }
    }
}

impl ImporterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_jobs == 0 {
            return Err(ConfigError::invalid(
                "importer.max_concurrent_jobs",
                "must be greater than 0",
            ));
        }
        if self.max_jobs_per_connection == 0 {
            return Err(ConfigError::invalid(
                "importer.max_jobs_per_connection",
                "must be greater than 0",
            ));
        }
        if !(1..=200).contains(&self.page_size) {
            return Err(ConfigError::invalid(
                "importer.page_size",
                "must be between 1 and 200",
            ));
        }
        if self.max_page_attempts == 0 {
            return Err(ConfigError::invalid(
                "importer.max_page_attempts",
                "must be greater than 0",
            ));
        }
        if self.max_record_bytes == 0 {
            return Err(ConfigError::invalid(
                "importer.max_record_bytes",
                "must be greater than 0",
            ));
        }
        if self.max_page_bytes == 0 {
            return Err(ConfigError::invalid(
                "importer.max_page_bytes",
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            ("importer.max_outage_secs", self.max_outage_secs),
            ("importer.reconcile_interval_ms", self.reconcile_interval_ms),
            ("importer.reconcile_after_secs", self.reconcile_after_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// How long imported records are kept. Calendar data defaults to a short window: the
/// seed's minimal-storage practice ("no permanent storage").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Hours a record of the resource is kept after it was stored; absent means forever.
    pub hours: BTreeMap<Resource, u64>,
    pub purge_interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            hours: BTreeMap::from([(Resource::CalendarEntries, 24)]),
            purge_interval_ms: 60_000,
        }
    }
}

impl RetentionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (resource, hours) in &self.hours {
            if *hours == 0 {
                return Err(ConfigError::invalid(
                    format!("retention.hours.{resource}"),
                    "must be at least 1 (remove the entry to keep records)",
                ));
            }
        }
        if self.purge_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "retention.purge_interval_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(config: &Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    /// The defaults with the one setting that has none: the credential at auth-svc.
    fn valid() -> Config {
        let mut config = Config::default();
        config.auth.token = Some(SecretString::from("import-credential-0123456789"));
        config
    }

    #[test]
    fn audit_settings_are_validated_by_field_name() {
        let valid = valid();
        assert!(
            valid.validate().is_ok(),
            "no audit token is allowed: events wait"
        );

        let mut config = valid.clone();
        config.audit.endpoint = "not a url".into();
        assert!(error_of(&config).contains("audit.endpoint"));

        let mut config = valid.clone();
        config.audit.batch_size = audit_outbox::MAX_BATCH + 1;
        assert!(error_of(&config).contains("audit.batch_size"));

        let mut config = valid.clone();
        config.audit.poll_interval_ms = 0;
        assert!(error_of(&config).contains("audit.poll_interval_ms"));

        let mut config = valid.clone();
        config.audit.platform_tenant = " ".into();
        assert!(error_of(&config).contains("audit.platform_tenant"));

        let mut config = valid;
        config.audit.token = Some(SecretString::from(""));
        assert!(error_of(&config).contains("audit.token"));
    }

    #[test]
    fn job_slots_the_broker_would_never_fill_are_refused_naming_both_settings() {
        let mut config = valid();
        config.importer.max_concurrent_jobs = 20;
        let error = error_of(&config);
        assert!(error.contains("amqp.prefetch"), "{error}");
        assert!(
            error.contains("importer.max_concurrent_jobs is 20"),
            "{error}"
        );

        config.amqp.prefetch = 20;
        assert!(config.validate().is_ok());
        config.amqp.prefetch = 32;
        assert!(
            config.validate().is_ok(),
            "a prefetch above the slots is fine"
        );
    }

    #[test]
    fn tls_settings_and_url_schemes_must_agree() {
        let tls = ClientTls {
            ca_path: "/etc/clio-connect/tls/ca.crt".into(),
            ..ClientTls::default()
        };
        let mut config = valid();
        config.amqp.url = SecretString::from("amqps://guest:guest@broker:5671/%2f");
        assert!(
            error_of(&config).contains("amqp.tls.ca_path"),
            "{}",
            error_of(&config)
        );
        config.amqp.tls = Some(tls.clone());
        config.validate().unwrap();
        config.amqp.tls = Some(ClientTls {
            domain: Some("broker.internal".into()),
            ..tls.clone()
        });
        assert!(error_of(&config).contains("amqp.tls.domain"));

        let mut config = valid();
        config.amqp.tls = Some(tls.clone());
        assert!(
            error_of(&config).contains("amqp.url"),
            "{}",
            error_of(&config)
        );

        // Without a bearer credential, only a client certificate identifies import-svc.
        let mut config = valid();
        config.auth.token = None;
        assert!(error_of(&config).contains("auth.token"));
        config.auth.tls = Some(ClientTls {
            cert_path: Some("/etc/clio-connect/tls/import-svc.crt".into()),
            key_path: Some("/etc/clio-connect/tls/import-svc.key".into()),
            ..tls
        });
        config.validate().unwrap();
    }

    #[test]
    fn the_audit_token_never_shows_in_debug_output() {
        let mut config = Config::default();
        config.audit.token = Some(SecretString::from("audit-writer-credential"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("audit-writer-credential"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
    }
}

/// Billing suggestions: how unbilled time is recognised, per tenant, and how much of a
/// calendar one detection reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuggestionsConfig {
    /// `[suggestions.rules.default]` and `[suggestions.rules.tenants.<tenant>]`.
    pub rules: TenantRules,
    /// The longest date range one `DetectUnbilledTime` reads.
    pub max_range_days: u32,
    /// How often approved suggestions left unwritten are written (after Clio did not
    /// answer).
    pub write_interval_ms: u64,
    /// How long after a write Clio did not answer the next attempt may start (it looks
    /// for the entry first).
    pub write_retry_delay_ms: u64,
    /// How often auth-svc is asked about each connection with open suggestions (one call
    /// each), to cancel those of revoked connections.
    pub revocation_check_ms: u64,
}

impl Default for SuggestionsConfig {
    fn default() -> Self {
        SuggestionsConfig {
            rules: TenantRules::default(),
            max_range_days: 93,
            write_interval_ms: 5_000,
            write_retry_delay_ms: 10_000,
            revocation_check_ms: 60_000,
        }
    }
}

impl SuggestionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err((path, problem)) = self.rules.check() {
            return Err(ConfigError::invalid(
                format!("suggestions.rules.{path}"),
                problem,
            ));
        }
        if self.write_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "suggestions.write_interval_ms",
                "must be at least 1",
            ));
        }
        if self.max_range_days == 0 {
            return Err(ConfigError::invalid(
                "suggestions.max_range_days",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
