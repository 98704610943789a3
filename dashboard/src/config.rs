//! The dashboard's configuration: where it listens, where the three services are, how long
//! a sign-in lasts, and the people who may sign in.
//!
//! Loaded like every service's: defaults, an optional TOML file, then `DASHBOARD_*`
//! variables (`DASHBOARD_PEOPLE` cannot express a list: people come from the file).

use std::collections::HashSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use service_runtime::Role;
use service_runtime::config::{
    ClientTls, ConfigError, ServiceConfig, Validate, http_base_url, positive,
};
use service_runtime::entrypoint::HasServiceConfig;

pub const ENV_PREFIX: &str = "DASHBOARD_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Where it listens and how it logs and traces (`listen`, `log_*`, `tracing`). The
    /// dashboard owns no database and takes no gRPC callers: `database` and `callers` are
    /// not read.
    #[serde(default)]
    pub service: ServiceConfig,
    pub backends: Backends,
    /// The tenants (firms) whose reports the overview offers, the first by default.
    pub tenants: Vec<String>,
    #[serde(default)]
    pub sessions: SessionConfig,
    /// Sign-in through the firm's OpenID Connect provider, beside or instead of passwords.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Who may sign in, each acting at the services with their own credential.
    #[serde(default)]
    pub people: Vec<PersonConfig>,
}

/// The three services, reached over gRPC like any other client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    pub auth: String,
    pub import: String,
    pub audit: String,
    /// Needed for `https://` endpoints.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A sign-in ends after this long without a request.
    pub idle_minutes: u64,
    /// ... and after this long whatever happens.
    pub absolute_hours: u64,
    /// Mark the session cookie `Secure` (with the `__Host-` prefix). Leave off only when the
    /// dashboard is reached over plain HTTP on the loopback, as in the local stack.
    pub secure_cookie: bool,
    /// Failed sign-ins of one name before it is refused for `lockout_minutes`.
    pub max_failed_sign_ins: u32,
    pub lockout_minutes: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_minutes: 30,
            absolute_hours: 12,
            secure_cookie: true,
            max_failed_sign_ins: 5,
            lockout_minutes: 15,
        }
    }
}

/// The firm's OpenID Connect provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer (its discovery document is `<issuer>/.well-known/openid-configuration`);
    /// `https://`, or `http://` on the loopback only.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// This dashboard's `/signin/oidc/callback` as the provider knows it.
    pub redirect_url: String,
    /// The claim naming the person, matched against `[[people]] name`.
    #[serde(default = "OidcConfig::default_person_claim")]
    pub person_claim: String,
    #[serde(default = "OidcConfig::default_scopes")]
    pub scopes: Vec<String>,
    /// The sign-in button's words ("Sign in with ...").
    #[serde(default = "OidcConfig::default_label")]
    pub label: String,
}

impl OidcConfig {
    fn default_person_claim() -> String {
        "email".into()
    }
    fn default_scopes() -> Vec<String> {
        vec!["openid".into(), "email".into()]
    }
    fn default_label() -> String {
        "the firm's sign-in".into()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = |field: &str, raw: &str| -> Result<url::Url, ConfigError> {
            let url = url::Url::parse(raw)
                .map_err(|e| ConfigError::invalid(field, format!("not a URL ({e})")))?;
            let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(ConfigError::invalid(
                    field,
                    "must be https (http only on the loopback)",
                ));
            }
            Ok(url)
        };
        url("oidc.issuer", &self.issuer)?;
        url("oidc.redirect_url", &self.redirect_url)?;
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::invalid("oidc.client_id", "must not be empty"));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(ConfigError::invalid("oidc.scopes", "must include openid"));
        }
        Ok(())
    }
}

/// A person who may sign in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// The name the services know the person's credential by (their callers' `name`),
    /// which is also what the audit log records as the actor.
    pub name: String,
    /// An argon2id PHC string (`dashboard hash-password`), never the password itself.
    /// Without one the person signs in through `[oidc]` only.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// What the dashboard offers the person; the services decide what they may do.
    pub roles: Vec<Role>,
    /// The person's service credential: every call the dashboard makes for them carries
    /// it, so the services check and record the person, not the dashboard.
    pub credential: SecretString,
}

impl std::fmt::Debug for PersonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl HasServiceConfig for DashboardConfig {
    fn service(&self) -> &ServiceConfig {
        &self.service
    }
}

impl Validate for DashboardConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.service.tracing.validate()?;
        http_base_url("backends.auth", &self.backends.auth)?;
        http_base_url("backends.import", &self.backends.import)?;
        http_base_url("backends.audit", &self.backends.audit)?;
        if self.tenants.is_empty() || self.tenants.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "tenants",
                "must name at least one tenant, none empty",
            ));
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        positive("sessions.idle_minutes", self.sessions.idle_minutes)?;
        positive("sessions.absolute_hours", self.sessions.absolute_hours)?;
        positive(
            "sessions.max_failed_sign_ins",
            u64::from(self.sessions.max_failed_sign_ins),
        )?;
        positive("sessions.lockout_minutes", self.sessions.lockout_minutes)?;
        let mut names = HashSet::new();
        for (i, person) in self.people.iter().enumerate() {
            let field = |f: &str| format!("people[{i}].{f}");
            if person.name.trim().is_empty() || person.name.len() > 200 {
                return Err(ConfigError::invalid(
                    field("name"),
                    "must be 1 to 200 characters",
                ));
            }
            if !names.insert(person.name.as_str()) {
                return Err(ConfigError::invalid(
                    field("name"),
                    format!("{} is listed twice", person.name),
                ));
            }
            match &person.password_hash {
                Some(hash) => {
                    argon2::PasswordHash::new(hash).map_err(|e| {
                        ConfigError::invalid(
                            field("password_hash"),
                            format!(
                                "not a PHC string ({e}); make one with `dashboard hash-password`"
                            ),
                        )
                    })?;
                }
                None if self.oidc.is_none() => {
                    return Err(ConfigError::invalid(
                        field("password_hash"),
                        "needed unless [oidc] is configured",
                    ));
                }
                None => {}
            }
            if person.roles.is_empty() {
                return Err(ConfigError::invalid(field("roles"), "must name a role"));
            }
            if person.credential.expose_secret().trim().is_empty() {
                return Err(ConfigError::invalid(
                    field("credential"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn local(file: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/local/config")
            .join(file)
    }

    /// The local stack's people sign in with the passwords its comments give, and each
    /// credential is one some service knows under the person's own name.
    #[test]
    fn the_local_stack_s_people_can_sign_in_and_act_as_themselves() {
        let config: DashboardConfig = service_runtime::config::load(
            "DASHBOARD_CONFIG_TEST_UNSET_",
            Some(&local("dashboard.toml")),
        )
        .unwrap();
        assert_eq!(config.people.len(), 4);
        let services: Vec<String> = ["auth-svc.toml", "import-svc.toml", "audit-svc.toml"]
            .iter()
            .map(|f| std::fs::read_to_string(local(f)).unwrap())
            .collect();
        for person in &config.people {
            let local_part = person.name.split('@').next().unwrap();
            let hash = argon2::PasswordHash::new(person.password_hash.as_deref().unwrap()).unwrap();
            argon2::PasswordVerifier::verify_password(
                &argon2::Argon2::default(),
                format!("{local_part}-demo-password").as_bytes(),
                &hash,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", person.name));
            let caller = format!(
                "name = \"{}\", token = \"{}\"",
                person.name,
                person.credential.expose_secret()
            );
            assert!(
                services.iter().any(|s| s.contains(&caller)),
                "no service knows {}'s credential",
                person.name
            );
        }
    }
}
