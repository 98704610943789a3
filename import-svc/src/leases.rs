//! Access to a connection's Clio token, leased from auth-svc for one job.
//!
//! import-svc never stores tokens: it asks auth-svc for a short-lived lease covering the
//! scopes the job needs, keeps it in memory as a secret, and asks again (forcing a refresh)
//! when Clio answers 401.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clio_api::AppBudget;
use proto::auth::v1 as auth;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use scope_catalog::{Scope, ScopeSet};
use secrecy::SecretString;
use service_runtime::caller_auth::BearerToken;
use service_runtime::tls::grpc_endpoint;
use service_runtime::trace_context::WithTraceContext;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use url::Url;

use crate::app_budget::AppBudgets;
use crate::config::AuthClientConfig;

/// A leased token and where it may be sent.
pub struct Lease {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
    /// The only origin this token may be sent to (the connection's region).
    pub api_base: Url,
    pub account_id: String,
    /// The budget of the Clio app the connection uses, when that app has one: every
    /// request with this token takes a place in it.
    pub budget: Option<Arc<dyn AppBudget>>,
}

impl Lease {
    /// The app budget, as a request takes it.
    pub fn budget(&self) -> Option<&dyn AppBudget> {
        self.budget.as_deref()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("api_base", &self.api_base.as_str())
            .field("budgeted", &self.budget.is_some())
            .finish()
    }
}

/// What auth-svc knows about a connection that decides whether a job may run.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub granted: ScopeSet,
    pub usable: Result<(), String>,
    pub account_id: String,
    pub tenant: String,
    /// The person who connected it (its owner).
    pub principal: String,
    /// Revoked for good (not merely waiting to be reconnected).
    pub revoked: bool,
    /// `proto::common::v1::Region` as sent.
    pub region: i32,
}

/// Why a connection cannot serve a job.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The job is wrong (unknown connection, grant lacks a scope): dead-letter it.
    #[error("{0}")]
    Refused(String),
    /// The connection cannot be used now (revoked, needs reconnect): fail the job.
    #[error("{0}")]
    Unusable(String),
    /// auth-svc could not answer: try the job again later.
    #[error("auth-svc unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Leases {
    client: AuthServiceClient<InterceptedService<Channel, WithTraceContext<BearerToken>>>,
    budgets: Option<AppBudgets>,
}

impl Leases {
    pub fn new(config: &AuthClientConfig) -> anyhow::Result<Self> {
        let channel = grpc_endpoint("auth.endpoint", &config.endpoint, config.tls.as_ref())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .connect_lazy();
        let bearer = BearerToken::optional(config.token.as_ref())?;
        // Leases are taken inside a job's span: auth-svc's spans join the job's trace.
        let client = AuthServiceClient::with_interceptor(channel, WithTraceContext(bearer));
        Ok(Leases {
            client,
            budgets: None,
        })
    }

    /// Leases carry their app's budget from `budgets`.
    pub fn with_budgets(mut self, budgets: AppBudgets) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// Looks the connection up: is it known, usable, and what does its grant cover.
    pub async fn connection(&self, connection_id: &str) -> Result<ConnectionInfo, LeaseError> {
        let request = auth::GetConnectionRequest {
            connection_id: connection_id.to_owned(),
        };
        let connection = self
            .client
            .clone()
            .get_connection(request)
            .await
            .map_err(|status| {
                classify(
                    status,
                    &format!("connection_id: unknown connection {connection_id:?}"),
                )
            })?;
        let connection = connection.into_inner();
        let granted = ScopeSet::from_wire(&connection.granted_scopes, "granted_scopes")
            .map_err(|e| LeaseError::Unavailable(format!("auth-svc sent an unknown scope: {e}")))?;
        let revoked = connection.status == auth::ConnectionStatus::Revoked as i32;
        let usable = match auth::ConnectionStatus::try_from(connection.status) {
            Ok(auth::ConnectionStatus::Active) => Ok(()),
            Ok(auth::ConnectionStatus::NeedsReconnect) => Err(format!(
                "connection {connection_id} needs to be reconnected by its owner"
            )),
            Ok(auth::ConnectionStatus::Revoked) => {
                Err(format!("connection {connection_id} is revoked"))
            }
            Ok(auth::ConnectionStatus::Unspecified) | Err(_) => {
                Err(format!("connection {connection_id} has an unknown status"))
            }
        };
        Ok(ConnectionInfo {
            granted,
            usable,
            account_id: connection.clio.map(|c| c.account_id).unwrap_or_default(),
            tenant: connection.tenant,
            principal: connection.principal,
            revoked,
            region: connection.region,
        })
    }

    /// The active connections `principal` made in `tenant` to Clio account `account_id`
    /// whose grant covers `scope` (the first page is plenty: one person has few).
    pub async fn active_connections_of(
        &self,
        principal: &str,
        tenant: &str,
        account_id: &str,
        scope: &Scope,
    ) -> Result<Vec<String>, LeaseError> {
        let request = auth::ListConnectionsRequest {
            tenant: tenant.to_owned(),
            principal: principal.to_owned(),
            status: auth::ConnectionStatus::Active as i32,
            page: Some(proto::common::v1::PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
            ..Default::default()
        };
        let listed = self
            .client
            .clone()
            .list_connections(request)
            .await
            .map_err(|status| classify(status, "no such principal"))?
            .into_inner();
        Ok(listed
            .connections
            .into_iter()
            .filter(|c| {
                c.clio
                    .as_ref()
                    .is_some_and(|clio| clio.account_id == account_id)
            })
            .filter(|c| {
                ScopeSet::from_wire(&c.granted_scopes, "granted_scopes")
                    .is_ok_and(|granted| granted.covers(scope))
            })
            .map(|c| c.connection_id)
            .collect())
    }

    /// Leases a token for `scopes`; `force_refresh` after Clio answered 401.
    pub async fn lease(
        &self,
        connection_id: &str,
        scopes: &[Scope],
        purpose: &str,
        force_refresh: bool,
    ) -> Result<Lease, LeaseError> {
        let request = auth::LeaseAccessTokenRequest {
            connection_id: connection_id.to_owned(),
            required_scopes: scopes.iter().map(|s| s.to_wire()).collect(),
            purpose: purpose.to_owned(),
            force_refresh,
        };
        let lease = self
            .client
            .clone()
            .lease_access_token(request)
            .await
            .map_err(|status| {
                classify(
                    status,
                    &format!("connection_id: unknown connection {connection_id:?}"),
                )
            })?
            .into_inner();
        let api_base = Url::parse(&lease.api_base_url).map_err(|e| {
            LeaseError::Unavailable(format!("auth-svc sent a bad api_base_url: {e}"))
        })?;
        let expires_at = lease
            .expires_at
            .as_ref()
            .and_then(proto::time::date_time)
            .unwrap_or_else(Utc::now);
        let region = proto::common::v1::Region::try_from(lease.region)
            .map_or("unknown", |r| r.as_str_name());
        let budget = self
            .budgets
            .as_ref()
            .and_then(|budgets| budgets.of(region, &lease.app_client_id));
        Ok(Lease {
            token: SecretString::from(lease.access_token),
            expires_at,
            api_base,
            account_id: lease.clio_account_id,
            budget,
        })
    }
}

/// auth-svc's answer, sorted by what the job should do about it.
fn classify(status: tonic::Status, not_found: &str) -> LeaseError {
    use tonic::Code;
    match status.code() {
        Code::NotFound => LeaseError::Refused(not_found.to_owned()),
        Code::PermissionDenied | Code::InvalidArgument => {
            LeaseError::Refused(status.message().to_owned())
        }
        Code::FailedPrecondition => LeaseError::Unusable(status.message().to_owned()),
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => {
            LeaseError::Unavailable(format!("{:?}: {}", status.code(), status.message()))
        }
    }
}
