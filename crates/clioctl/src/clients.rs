//! gRPC clients of the three services, each call carrying the credential of the role it
//! needs.

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit::v1::compliance_service_client::ComplianceServiceClient;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::import::v1::import_service_client::ImportServiceClient;
use secrecy::SecretString;
use serde::Deserialize;
use service_runtime::caller_auth::BearerToken;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClioctlConfig {
    pub auth: String,
    pub import: String,
    pub audit: String,
    pub tokens: Tokens,
    /// Demo only: the Clio simulator the stack runs against.
    #[serde(default)]
    pub demo: Option<DemoConfig>,
}

/// One credential per role clioctl acts in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub operator: SecretString,
    pub compliance: SecretString,
    pub connector: SecretString,
    pub job_submitter: SecretString,
    pub data_reader: SecretString,
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

type Authed = InterceptedService<Channel, BearerToken>;

pub struct Clients {
    pub config: ClioctlConfig,
    auth: Channel,
    import: Channel,
    audit: Channel,
}

impl Clients {
    pub fn from_file(path: &Path) -> anyhow::Result<Clients> {
        let config: ClioctlConfig = Figment::new()
            .merge(Toml::file(path))
            .extract()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let channel = |url: &str| -> anyhow::Result<Channel> {
            Ok(Channel::from_shared(url.to_owned())?.connect_lazy())
        };
        Ok(Clients {
            auth: channel(&config.auth)?,
            import: channel(&config.import)?,
            audit: channel(&config.audit)?,
            config,
        })
    }

    fn with(&self, channel: &Channel, token: &SecretString) -> anyhow::Result<Authed> {
        Ok(InterceptedService::new(
            channel.clone(),
            BearerToken::new(token)?,
        ))
    }

    pub fn auth_as_operator(&self) -> anyhow::Result<AuthServiceClient<Authed>> {
        Ok(AuthServiceClient::new(
            self.with(&self.auth, &self.config.tokens.operator)?,
        ))
    }

    pub fn auth_as_compliance(&self) -> anyhow::Result<AuthServiceClient<Authed>> {
        Ok(AuthServiceClient::new(
            self.with(&self.auth, &self.config.tokens.compliance)?,
        ))
    }

    pub fn auth_as_connector(&self) -> anyhow::Result<AuthServiceClient<Authed>> {
        Ok(AuthServiceClient::new(
            self.with(&self.auth, &self.config.tokens.connector)?,
        ))
    }

    pub fn import(&self) -> anyhow::Result<ImportServiceClient<Authed>> {
        Ok(ImportServiceClient::new(
            self.with(&self.import, &self.config.tokens.job_submitter)?,
        ))
    }

    pub fn records(&self) -> anyhow::Result<ImportServiceClient<Authed>> {
        Ok(ImportServiceClient::new(
            self.with(&self.import, &self.config.tokens.data_reader)?,
        ))
    }

    pub fn audit(&self) -> anyhow::Result<AuditServiceClient<Authed>> {
        Ok(AuditServiceClient::new(
            self.with(&self.audit, &self.config.tokens.compliance)?,
        ))
    }

    pub fn compliance(&self) -> anyhow::Result<ComplianceServiceClient<Authed>> {
        Ok(ComplianceServiceClient::new(
            self.with(&self.audit, &self.config.tokens.compliance)?,
        ))
    }
}
