//! audit-svc configuration: the shared service part plus what only this service needs.
//!
//! Environment variables use the prefix `AUDIT_SVC_` (`AUDIT_SVC_SERVICE__DATABASE__URL`).
//!
//! ```toml
//! platform_tenant = "platform"          # tenant of this service's own ACCESS_DENIED events
//! # service.database.url is the service's login: it owns nothing and works as audit_appender.
//! [database]
//! migration_url = "postgres://clio_audit_owner@db/clio_audit"  # owner login, for migrations
//! migrate_at_start = true               # false when `audit-svc migrate` runs beforehand
//! [signing]
//! key = "<base64 or hex of a 32-byte Ed25519 seed>"   # or key_file = "/run/secrets/audit-key"
//! trusted_public_keys = ["<base64 public key of a retired signing key>"]
//! [checkpoints]
//! every_events = 1000                   # sign the head after this many events per tenant
//! interval_ms = 60000                   # ... or this long after the last checkpoint
//! witness_file = "/var/lib/clio-audit-witness/checkpoints.jsonl"  # copy outside Postgres
//! [watch]
//! poll_interval_ms = 1000               # fallback when a notification is missed
//! [reports]
//! zombie_idle_days = 90
//! offboarding_limit_minutes = 120
//! # What each audit_writer credential may record through Record (nothing without a grant):
//! [[writers]]
//! caller = "auth-svc"                   # a name in service.callers with role audit_writer
//! sources = ["auth-svc"]                # the `source` its events may carry
//! kinds = ["app_registered", "connection_granted", "access_denied"]   # lower-case kinds
//! ```
//!
//! `Config::default()` has no signing key: [`Validate`] refuses it, so the binary never
//! starts like that, while in-process runs (tests, the e2e suite) sign with an ephemeral
//! key and say so in the log.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::Role;
use service_runtime::config::{ConfigError, ServiceConfig, Validate, positive};
use service_runtime::entrypoint::HasServiceConfig;

/// The prefix of the environment variables the service and its subcommands read.
pub const ENV_PREFIX: &str = "AUDIT_SVC_";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, logs, database, callers: the part every service shares.
    pub service: ServiceConfig,
    /// Which login migrates the schema (`service.database.url` is the login the service
    /// works as).
    pub database: DatabaseLogins,
    /// The tenant of events about the platform rather than a firm (calls this service
    /// refused).
    pub platform_tenant: String,
    pub signing: SigningConfig,
    pub checkpoints: CheckpointConfig,
    pub watch: WatchConfig,
    pub reports: ReportConfig,
    /// What each `audit_writer` credential may record. A writer without a grant may
    /// record nothing; review kinds are recorded only through `ComplianceService`.
    pub writers: Vec<WriterGrant>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceConfig::local_defaults(50053, "clio_audit"),
            database: DatabaseLogins::default(),
            platform_tenant: "platform".into(),
            signing: SigningConfig::default(),
            checkpoints: CheckpointConfig::default(),
            watch: WatchConfig::default(),
            reports: ReportConfig::default(),
            writers: Vec::new(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate().map_err(|e| e.within("service"))?;
        self.database.validate()?;
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
        self.validate_writers()
    }
}

impl Config {
    fn validate_writers(&self) -> Result<(), ConfigError> {
        for (i, grant) in self.writers.iter().enumerate() {
            let field = |name: &str| format!("writers[{i}].{name}");
            let Some(caller) = self.service.callers.iter().find(|c| c.name == grant.caller) else {
                return Err(ConfigError::invalid(
                    field("caller"),
                    format!("{:?} is not in service.callers", grant.caller),
                ));
            };
            if !caller.roles.contains(&Role::AuditWriter) {
                return Err(ConfigError::invalid(
                    field("caller"),
                    format!("{:?} does not have the audit_writer role", grant.caller),
                ));
            }
            if self.writers[..i].iter().any(|g| g.caller == grant.caller) {
                return Err(ConfigError::invalid(
                    field("caller"),
                    format!("{:?} has another grant (one per caller)", grant.caller),
                ));
            }
            if grant.sources.is_empty() || grant.sources.iter().any(|s| s.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    field("sources"),
                    "must list at least one non-empty source",
                ));
            }
            if grant.kinds.is_empty() {
                return Err(ConfigError::invalid(
                    field("kinds"),
                    "must list at least one event kind",
                ));
            }
            for (k, kind) in grant.kinds.iter().enumerate() {
                match WriterGrant::recordable_kind(kind) {
                    Ok(_) => {}
                    Err(problem) => {
                        return Err(ConfigError::invalid(
                            format!("writers[{i}].kinds[{k}]"),
                            problem,
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The grant of the caller named `caller`, if it has one.
    pub fn writer_grant(&self, caller: &str) -> Option<&WriterGrant> {
        self.writers.iter().find(|g| g.caller == caller)
    }
}

/// What one `audit_writer` credential may record through `Record`: events whose `source`
/// and kind it lists (and, if the credential is limited to tenants, only those tenants).
/// Anything else is refused with `PERMISSION_DENIED` and recorded as an ACCESS_DENIED
/// event, so one service's credential cannot speak for another service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterGrant {
    /// The caller's name in `service.callers` (it needs the `audit_writer` role).
    pub caller: String,
    /// The values its events' `source` may take.
    pub sources: Vec<String>,
    /// The event kinds it may record, as lower-case names (`connection_granted`).
    pub kinds: Vec<String>,
}

/// What auth-svc records: apps, consent, connections, tokens, keys, offboarding, denials.
pub const AUTH_SVC_KINDS: &[&str] = &[
    "app_registered",
    "app_approved",
    "app_rejected",
    "app_scopes_changed",
    "app_revoked",
    "app_secret_replaced",
    "consent_recorded",
    "connection_granted",
    "connection_reconnected",
    "connection_drifted",
    "connection_needs_reconnect",
    "connection_revoked",
    "revocation_retried",
    "token_refreshed",
    "token_leased",
    "user_offboarded",
    "encryption_key_rotated",
    "access_denied",
];

/// What import-svc records: its jobs' lifecycle, decisions on billing suggestions and the
/// writes they lead to, its webhook subscriptions and the deliveries it refused, and the
/// calls it refused.
pub const IMPORT_SVC_KINDS: &[&str] = &[
    "import_started",
    "import_completed",
    "import_failed",
    "import_dead_lettered",
    "write_approved",
    "write_rejected",
    "write_performed",
    "webhook_subscribed",
    "webhook_renewed",
    "webhook_removed",
    "webhook_delivery_refused",
    "access_denied",
];

impl WriterGrant {
    /// auth-svc's grant (source `auth-svc`, [`AUTH_SVC_KINDS`]) for its credential `caller`.
    pub fn auth_svc(caller: &str) -> WriterGrant {
        WriterGrant::of(caller, "auth-svc", AUTH_SVC_KINDS)
    }

    /// import-svc's grant (source `import-svc`, [`IMPORT_SVC_KINDS`]) for its credential.
    pub fn import_svc(caller: &str) -> WriterGrant {
        WriterGrant::of(caller, "import-svc", IMPORT_SVC_KINDS)
    }

    fn of(caller: &str, source: &str, kinds: &[&str]) -> WriterGrant {
        WriterGrant {
            caller: caller.to_owned(),
            sources: vec![source.to_owned()],
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    /// Whether this grant covers an event of `kind` (lower-case name) from `source`.
    pub fn allows(&self, source: &str, kind: &str) -> bool {
        self.sources.iter().any(|s| s == source) && self.kinds.iter().any(|k| k == kind)
    }

    /// A kind a grant may list: known, and not one only `ComplianceService` records.
    fn recordable_kind(name: &str) -> Result<proto::common::v1::EventKind, String> {
        use proto::common::v1::EventKind;
        match crate::event::kind_from_name(name) {
            EventKind::Unspecified => Err(format!("{name:?} is not an event kind")),
            EventKind::ReviewGenerated | EventKind::ReviewAttested => Err(format!(
                "{name:?} is recorded only through ComplianceService, never by a writer"
            )),
            kind if crate::event::kind_name(kind) != name => {
                Err(format!("{name:?}: write kinds in lower case"))
            }
            kind => Ok(kind),
        }
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
    /// A JSON-lines file outside Postgres every signed checkpoint is appended to, moments
    /// after it commits (`witness` module); `audit-svc verify --witness FILE` proves the
    /// log against it. None: checkpoints live only in the database.
    pub witness_file: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_events: 1_000,
            interval_ms: 60_000,
            witness_file: None,
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

/// The two logins of the database (see the README, "Database logins").
///
/// Production separates them: `migration_url` is the login that owns the schema and runs
/// the migrations; `service.database.url` is a login that owns nothing and may only work
/// as `audit_appender` (SELECT and INSERT on the log). Without `migration_url` the service
/// migrates with its own login, as local development and tests do with the superuser
/// `postgres`: then only the append-only trigger protects the log from that login.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseLogins {
    /// The owner login's URL, same database as `service.database.url`.
    pub migration_url: Option<SecretString>,
    /// Run the migrations (and rebuild stale projections) when the service starts. With
    /// `false` an earlier `audit-svc migrate` did it (a Kubernetes init container), so the
    /// service process never holds the owner's credentials; the service then only checks
    /// that the schema is the one it was built for.
    pub migrate_at_start: bool,
}

impl Default for DatabaseLogins {
    fn default() -> Self {
        DatabaseLogins {
            migration_url: None,
            migrate_at_start: true,
        }
    }
}

impl DatabaseLogins {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.migration_url {
            let parsed = secrecy::ExposeSecret::expose_secret(url)
                .parse::<sqlx::postgres::PgConnectOptions>();
            // The parse error is not echoed: the value may hold a password.
            if parsed.is_err() {
                return Err(ConfigError::invalid(
                    "database.migration_url",
                    "not a postgres:// URL",
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for DatabaseLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseLogins")
            .field(
                "migration_url",
                &self.migration_url.as_ref().map(|url| {
                    service_runtime::config::redact_url(secrecy::ExposeSecret::expose_secret(url))
                }),
            )
            .field("migrate_at_start", &self.migrate_at_start)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use service_runtime::config::CallerCredential;

    use super::*;

    fn with_writers(writers: Vec<WriterGrant>) -> Config {
        let caller = |name: &str, role| CallerCredential {
            name: name.into(),
            token: Some(SecretString::from(format!(
                "credential-of-{name}-0123456789"
            ))),
            tls_subject: None,
            roles: vec![role],
            tenants: None,
        };
        let mut config = Config {
            writers,
            ..Config::default()
        };
        config.service.callers = vec![
            caller("auth-svc", Role::AuditWriter),
            caller("compliance", Role::Compliance),
        ];
        config.signing.key = Some(SecretString::from("07".repeat(32)));
        config
    }

    fn refusal(writers: Vec<WriterGrant>) -> String {
        with_writers(writers).validate().unwrap_err().to_string()
    }

    #[test]
    fn the_standard_grants_are_valid_and_cover_their_services() {
        assert!(
            with_writers(vec![WriterGrant::auth_svc("auth-svc")])
                .validate()
                .is_ok()
        );
        let grant = WriterGrant::auth_svc("auth-svc");
        assert!(grant.allows("auth-svc", "connection_revoked"));
        assert!(!grant.allows("import-svc", "connection_revoked"));
        assert!(!grant.allows("auth-svc", "import_started"));
        let import = WriterGrant::import_svc("import-svc");
        assert!(import.allows("import-svc", "access_denied"));
        assert!(!import.allows("import-svc", "connection_revoked"));
    }

    #[test]
    fn a_bad_grant_stops_start_up_naming_its_field() {
        let grant = |caller: &str, kinds: &[&str]| WriterGrant {
            caller: caller.into(),
            sources: vec!["auth-svc".into()],
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        };
        for (writers, field) in [
            (
                vec![grant("nobody", &["app_registered"])],
                "writers[0].caller",
            ),
            (
                vec![grant("compliance", &["app_registered"])],
                "writers[0].caller",
            ),
            (
                vec![
                    grant("auth-svc", &["app_registered"]),
                    grant("auth-svc", &["app_revoked"]),
                ],
                "writers[1].caller",
            ),
            (vec![grant("auth-svc", &[])], "writers[0].kinds"),
            (vec![grant("auth-svc", &["bogus"])], "writers[0].kinds[0]"),
            (
                vec![grant("auth-svc", &["app_registered", "review_attested"])],
                "writers[0].kinds[1]",
            ),
            (
                vec![grant("auth-svc", &["review_generated"])],
                "writers[0].kinds[0]",
            ),
            (
                vec![grant("auth-svc", &["APP_REGISTERED"])],
                "writers[0].kinds[0]",
            ),
            (
                vec![WriterGrant {
                    sources: vec![],
                    ..grant("auth-svc", &["app_registered"])
                }],
                "writers[0].sources",
            ),
        ] {
            let error = refusal(writers);
            assert!(error.contains(&format!("{field}:")), "{field}: {error}");
        }
    }

    #[test]
    fn the_local_stack_s_grants_parse_and_validate() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/local/config/audit-svc.toml");
        let config: Config =
            service_runtime::config::load("AUDIT_SVC_CONFIG_TEST_UNSET_", Some(&file)).unwrap();
        assert_eq!(
            config.writers,
            vec![
                WriterGrant::auth_svc("auth-svc"),
                WriterGrant::import_svc("import-svc")
            ]
        );
    }
}
