//! The three services, as gRPC clients that act for one person: every call carries that
//! person's own credential, so each service checks and records the person.

use std::time::Duration;

use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit::v1::compliance_service_client::ComplianceServiceClient;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::imports::v1::import_service_client::ImportServiceClient;
use proto::suggestions::v1::suggestion_service_client::SuggestionServiceClient;
use service_runtime::caller_auth::BearerToken;
use service_runtime::config::ConfigError;
use service_runtime::tls::grpc_endpoint;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use crate::config;
use crate::people::Person;

/// A call waits no longer than this for an answer: a page should say "unreachable" rather
/// than hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub type Authed = InterceptedService<Channel, BearerToken>;

/// One channel per service, shared by every person's calls (connections are made lazily
/// and kept).
#[derive(Clone)]
pub struct Backends {
    auth: Channel,
    import: Channel,
    audit: Channel,
}

pub const AUTH: &str = "auth-svc";
pub const IMPORT: &str = "import-svc";
pub const AUDIT: &str = "audit-svc";

impl Backends {
    pub fn new(config: &config::Backends) -> Result<Backends, ConfigError> {
        let channel = |field: &str, url: &str| {
            Ok::<_, ConfigError>(
                grpc_endpoint(field, url, config.tls.as_ref())?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy(),
            )
        };
        Ok(Backends {
            auth: channel("backends.auth", &config.auth)?,
            import: channel("backends.import", &config.import)?,
            audit: channel("backends.audit", &config.audit)?,
        })
    }

    pub fn auth(&self, person: &Person) -> AuthServiceClient<Authed> {
        AuthServiceClient::with_interceptor(self.auth.clone(), person.bearer.clone())
    }

    pub fn compliance(&self, person: &Person) -> ComplianceServiceClient<Authed> {
        ComplianceServiceClient::with_interceptor(self.audit.clone(), person.bearer.clone())
    }

    pub fn audit(&self, person: &Person) -> AuditServiceClient<Authed> {
        AuditServiceClient::with_interceptor(self.audit.clone(), person.bearer.clone())
    }

    pub fn imports(&self, person: &Person) -> ImportServiceClient<Authed> {
        ImportServiceClient::with_interceptor(self.import.clone(), person.bearer.clone())
    }

    pub fn suggestions(&self, person: &Person) -> SuggestionServiceClient<Authed> {
        SuggestionServiceClient::with_interceptor(self.import.clone(), person.bearer.clone())
    }
}
