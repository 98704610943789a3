//! Configuration (built-in endpoints, an optional TOML file, `CLIOCTL_*` variables) and
//! the gRPC clients of the three services, each call carrying the credential of the role
//! it needs and each failure explained with the endpoint and the setting to check.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit::v1::compliance_service_client::ComplianceServiceClient;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::imports::v1::import_service_client::ImportServiceClient;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use service_runtime::caller_auth::BearerToken;
use service_runtime::config::ClientTls;
use service_runtime::tls::grpc_endpoint;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use crate::exit::{Failure, code};

/// How long a call waits for the TCP connection before saying the endpoint is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClioctlConfig {
    /// auth-svc's URL (`CLIOCTL_AUTH`).
    pub auth: String,
    /// import-svc's URL (`CLIOCTL_IMPORT`).
    pub import: String,
    /// audit-svc's URL (`CLIOCTL_AUDIT`).
    pub audit: String,
    /// Only the tokens of the roles a person acts in need to be present.
    #[serde(default)]
    pub tokens: Tokens,
    /// TLS to the services (`[tls]`, `CLIOCTL_TLS__CA_PATH`): needed for `https://`
    /// endpoints. With a client certificate the services map to a caller, no token is
    /// needed.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Demo only: the Clio simulator the stack runs against.
    #[serde(default)]
    pub demo: Option<DemoConfig>,
}

/// The built-in endpoints: the services' default listen addresses.
#[derive(Serialize)]
struct Defaults {
    auth: &'static str,
    import: &'static str,
    audit: &'static str,
}

const DEFAULTS: Defaults = Defaults {
    auth: "http://127.0.0.1:50051",
    import: "http://127.0.0.1:50052",
    audit: "http://127.0.0.1:50053",
};

/// One credential per role clioctl acts in; each command needs only its own.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub operator: Option<SecretString>,
    pub compliance: Option<SecretString>,
    pub connector: Option<SecretString>,
    pub job_submitter: Option<SecretString>,
    pub data_reader: Option<SecretString>,
    pub billing_reviewer: Option<SecretString>,
    pub billing_approver: Option<SecretString>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// The simulator's US base URL (OAuth and API).
    pub clio_sim: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub clio_user_id: u64,
}

/// A role whose service credential a command presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    Compliance,
    Connector,
    JobSubmitter,
    DataReader,
    BillingReviewer,
    BillingApprover,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Compliance => "compliance",
            Role::Connector => "connector",
            Role::JobSubmitter => "job_submitter",
            Role::DataReader => "data_reader",
            Role::BillingReviewer => "billing_reviewer",
            Role::BillingApprover => "billing_approver",
        }
    }

    /// `tokens.operator (CLIOCTL_TOKENS__OPERATOR)`.
    pub fn setting(self) -> String {
        format!(
            "tokens.{} (CLIOCTL_TOKENS__{})",
            self.key(),
            self.key().to_uppercase()
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Service {
    Auth,
    Import,
    Audit,
}

impl Service {
    /// The config key of its URL.
    fn key(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Import => "import",
            Service::Audit => "audit",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth-svc",
            Service::Import => "import-svc",
            Service::Audit => "audit-svc",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Service::Auth => "`auth` (CLIOCTL_AUTH)",
            Service::Import => "`import` (CLIOCTL_IMPORT)",
            Service::Audit => "`audit` (CLIOCTL_AUDIT)",
        }
    }
}

pub(crate) type Authed = InterceptedService<Channel, BearerToken>;

/// The endpoint and credential of one call, to explain its failures.
pub struct Target {
    service: Service,
    url: String,
    role: Role,
}

impl Target {
    /// Awaits an RPC and turns a refusal into an error naming what to check.
    pub async fn call<T>(
        &self,
        method: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> anyhow::Result<T> {
        call.await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.explain(method, &status))
    }

    /// The error for a refused call (or a failed stream item) of `method`.
    pub fn explain(&self, method: &str, status: &tonic::Status) -> anyhow::Error {
        let Target { service, url, role } = self;
        let (name, setting) = (service.name(), service.setting());
        let message = status.message();
        let failure = match status.code() {
            // Without a source the service itself answered UNAVAILABLE (one of its own
            // dependencies is down): it was reached.
            tonic::Code::Unavailable if std::error::Error::source(status).is_some() => {
                Failure::new(
                    code::UNREACHABLE,
                    format!(
                        "cannot reach {name} at {url} ({method}: {message}); check that {name} \
                     runs and that {setting} points at it"
                    ),
                )
            }
            tonic::Code::Unauthenticated => Failure::new(
                code::FAILED,
                format!(
                    "{name} at {url} did not accept the credential in {} ({method}: \
                     {message}); check it matches a caller in {name}'s [[service.callers]]",
                    role.setting()
                ),
            ),
            tonic::Code::PermissionDenied => Failure::new(
                code::FAILED,
                format!(
                    "{name} at {url} refused {method} to the credential in {}: {message}",
                    role.setting()
                ),
            ),
            other => Failure::new(
                code::FAILED,
                format!("{name} at {url} answered {method} with {other:?}: {message}"),
            ),
        };
        failure.into()
    }
}

pub struct Clients {
    pub config: ClioctlConfig,
}

impl Clients {
    /// Built-in endpoints, then `file` (if any), then `CLIOCTL_*` variables (`__`
    /// separates levels: `CLIOCTL_TOKENS__OPERATOR`).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Clients> {
        let mut figment = Figment::from(Serialized::defaults(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Failure::new(
                    code::USAGE,
                    format!(
                        "the config file {} does not exist (--config / CLIOCTL_CONFIG)",
                        path.display()
                    ),
                )
                .into());
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only the config's own keys: CLIOCTL_CONFIG, CLIOCTL_OUTPUT and the command
        // arguments' variables are read by the argument parser.
        figment = figment.merge(
            Env::prefixed("CLIOCTL_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    ["auth", "import", "audit"].contains(&key.as_str())
                        || key.starts_with("tokens__")
                        || key.starts_with("tls__")
                        || key.starts_with("demo__")
                })
                .split("__"),
        );
        let config: ClioctlConfig = figment.extract().map_err(|e| {
            let source = file.map_or("CLIOCTL_* variables".to_owned(), |p| {
                format!("{} or CLIOCTL_* variables", p.display())
            });
            Failure::new(code::USAGE, format!("configuration ({source}): {e}"))
        })?;
        Ok(Clients { config })
    }

    fn url(&self, service: Service) -> &str {
        match service {
            Service::Auth => &self.config.auth,
            Service::Import => &self.config.import,
            Service::Audit => &self.config.audit,
        }
    }

    fn token(&self, role: Role) -> Option<&SecretString> {
        let tokens = &self.config.tokens;
        match role {
            Role::Operator => tokens.operator.as_ref(),
            Role::Compliance => tokens.compliance.as_ref(),
            Role::Connector => tokens.connector.as_ref(),
            Role::JobSubmitter => tokens.job_submitter.as_ref(),
            Role::DataReader => tokens.data_reader.as_ref(),
            Role::BillingReviewer => tokens.billing_reviewer.as_ref(),
            Role::BillingApprover => tokens.billing_approver.as_ref(),
        }
    }

    /// A channel to `service` carrying the first configured credential of `roles`, for a
    /// client this module does not build.
    pub fn channel(&self, service: Service, roles: &[Role]) -> anyhow::Result<(Authed, Target)> {
        self.connect(service, roles)
    }

    /// A channel to `service` carrying the first configured credential of `roles`.
    fn connect(&self, service: Service, roles: &[Role]) -> anyhow::Result<(Authed, Target)> {
        let found = roles
            .iter()
            .find_map(|role| self.token(*role).map(|token| (*role, Some(token))));
        let has_certificate = self
            .config
            .tls
            .as_ref()
            .is_some_and(ClientTls::has_client_certificate);
        let (role, token) = match found {
            Some(found) => found,
            // The client certificate speaks for the caller.
            None if has_certificate && !roles.is_empty() => (roles[0], None),
            None => {
                let settings: Vec<String> = roles.iter().map(|r| r.setting()).collect();
                return Err(Failure::new(
                    code::USAGE,
                    format!(
                        "this command needs a service credential: set {} (or a tls client \
                         certificate) in the config file or the environment",
                        settings.join(" or ")
                    ),
                )
                .into());
            }
        };
        let url = self.url(service).to_owned();
        let endpoint =
            grpc_endpoint(service.key(), &url, self.config.tls.as_ref()).map_err(|e| {
                Failure::new(
                    code::USAGE,
                    format!(
                        "{} endpoint {url:?} in {}: {e}",
                        service.name(),
                        service.setting()
                    ),
                )
            })?;
        let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy();
        let bearer = BearerToken::optional(token).map_err(|_| {
            Failure::new(
                code::USAGE,
                format!("{} is not valid header text", role.setting()),
            )
        })?;
        Ok((
            InterceptedService::new(channel, bearer),
            Target { service, url, role },
        ))
    }

    pub fn auth(&self, roles: &[Role]) -> anyhow::Result<(AuthServiceClient<Authed>, Target)> {
        let (channel, target) = self.connect(Service::Auth, roles)?;
        Ok((AuthServiceClient::new(channel), target))
    }

    pub fn import(&self, roles: &[Role]) -> anyhow::Result<(ImportServiceClient<Authed>, Target)> {
        let (channel, target) = self.connect(Service::Import, roles)?;
        Ok((ImportServiceClient::new(channel), target))
    }

    pub fn audit(&self) -> anyhow::Result<(AuditServiceClient<Authed>, Target)> {
        let (channel, target) = self.connect(Service::Audit, &[Role::Compliance])?;
        Ok((AuditServiceClient::new(channel), target))
    }

    pub fn compliance(&self) -> anyhow::Result<(ComplianceServiceClient<Authed>, Target)> {
        let (channel, target) = self.connect(Service::Audit, &[Role::Compliance])?;
        Ok((ComplianceServiceClient::new(channel), target))
    }
}
