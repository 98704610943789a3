//! Caller authentication and the per-RPC role allow-list.
//!
//! Every gRPC call carries `authorization: Bearer <service credential>`, or, over mTLS, a
//! client certificate whose subject CN a caller is configured with (`tls_subject`). The
//! credential is looked up (by SHA-256, compared in constant time), the caller's roles are checked
//! against the allow-list of the called method, and the verified [`Caller`] is put in the
//! request extensions for handlers (`request.extensions().get::<Caller>()`).
//!
//! This is a tower layer rather than a `tonic::service::Interceptor` because an
//! interceptor does not see which method is being called, and the allow-list is per RPC.
//! Methods not in the policy are refused (fail closed); health, reflection and the
//! declared public HTTP paths need no credential.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::config::CallerCredential;
use crate::tls::subject_common_name;

/// What a caller may do. Each RPC lists the roles allowed to call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers apps, changes declared scopes, revokes, rotates keys, cancels jobs.
    Operator,
    /// Approves apps, reads audit and compliance reports, attests reviews.
    Compliance,
    /// Starts and completes connections on behalf of a person (platform apps, clioctl).
    Connector,
    /// Leases access tokens (import-svc).
    Import,
    /// Records audit events (the other services).
    AuditWriter,
    /// Submits import jobs and reads their status.
    JobSubmitter,
    /// Reads imported records.
    DataReader,
    /// A person's credential reviewing billing suggestions of their own connections (those
    /// whose principal is the caller's name): detects, lists, approves, rejects.
    BillingReviewer,
    /// Reviews billing suggestions of every connection in its tenants (a firm's billing
    /// approver).
    BillingApprover,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Compliance => "compliance",
            Role::Connector => "connector",
            Role::Import => "import",
            Role::AuditWriter => "audit_writer",
            Role::JobSubmitter => "job_submitter",
            Role::DataReader => "data_reader",
            Role::BillingReviewer => "billing_reviewer",
            Role::BillingApprover => "billing_approver",
        }
    }
}

/// The verified caller of a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub roles: Vec<Role>,
    /// The tenants this caller is limited to; `None`: every tenant.
    pub tenants: Option<Vec<String>>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether this caller may touch the data of `tenant`.
    pub fn may_access_tenant(&self, tenant: &str) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|tenants| tenants.iter().any(|t| t == tenant))
    }

    /// The caller of a tonic request, put there by [`CallerAuthLayer`].
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::unauthenticated("no verified caller on this request"))
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("tenants", &self.tenants)
            .finish()
    }
}

/// The metrics label of calls to a path the policy does not list.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Which roles may call which method, and which paths are open.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// `/package.Service/Method` → allowed roles.
    methods: HashMap<String, Vec<Role>>,
    /// Path prefixes that need no credential.
    public_prefixes: Vec<String>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy {
            methods: HashMap::new(),
            public_prefixes: vec![
                // Orchestrators probe health without credentials; reflection lists only
                // the contracts, which are not secret.
                "/grpc.health.v1.Health/".into(),
                "/grpc.reflection.v1.ServerReflection/".into(),
                "/grpc.reflection.v1alpha.ServerReflection/".into(),
                "/metrics".into(),
            ],
        }
    }
}

impl AccessPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `roles` to call `method` of `service` (its full name, e.g.
    /// `clio_connect.auth.v1.AuthService`).
    pub fn allow(mut self, service: &str, method: &str, roles: &[Role]) -> Self {
        self.methods
            .insert(format!("/{service}/{method}"), roles.to_vec());
        self
    }

    /// Every method the policy names, as its call path (`/package.Service/Method`), in no
    /// particular order. Tests compare it with the RPCs a service serves.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// Serves `prefix` without a credential (an HTTP callback that checks its own state).
    pub fn public(mut self, prefix: &str) -> Self {
        self.public_prefixes.push(prefix.to_owned());
        self
    }

    /// The metrics label for a called path: the method itself when the policy knows it,
    /// else one fixed label. A refused path is whatever the caller sent, and a label per
    /// invented path would let anyone grow the registry without bound.
    fn method_label<'a>(&self, path: &'a str) -> &'a str {
        if self.methods.contains_key(path) {
            path
        } else {
            UNKNOWN_METHOD
        }
    }

    fn is_public(&self, path: &str) -> bool {
        self.public_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }
}

/// Why a call was refused, for whoever records denials.
#[derive(Debug, Clone)]
pub struct Denial {
    pub method: String,
    pub caller: Option<String>,
    pub code: tonic::Code,
    pub reason: String,
}

impl Denial {
    /// The log line every sink writes for a refused call, at WARN (nobody needs to be
    /// paged for one denial).
    pub fn log(&self) {
        tracing::warn!(
            method = %self.method,
            caller = self.caller.as_deref().unwrap_or("-"),
            code = ?self.code,
            reason = %self.reason,
            "call refused"
        );
    }
}

/// Notified of each refused call (services record `ACCESS_DENIED` audit events).
pub trait DenialSink: Send + Sync + 'static {
    fn denied(&self, denial: Denial);
}

/// The default sink: only [`Denial::log`].
#[derive(Debug, Default)]
pub struct LogDenials;

impl DenialSink for LogDenials {
    fn denied(&self, denial: Denial) {
        denial.log();
    }
}

struct KnownCredential {
    digest: [u8; 32],
    caller: Caller,
}

struct Authorizer {
    credentials: Vec<KnownCredential>,
    /// Callers identified by the CN of a client certificate the TLS handshake verified.
    subjects: HashMap<String, Caller>,
    policy: AccessPolicy,
    sink: Arc<dyn DenialSink>,
    metrics: crate::metrics::RpcMetrics,
}

/// Result of checking a request.
enum Decision {
    Public,
    Allowed(Caller),
    Refused(Status),
}

impl Authorizer {
    fn decide(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer_subject: Option<&str>,
    ) -> Decision {
        if self.policy.is_public(path) {
            return Decision::Public;
        }
        let caller = match self.authenticate(headers, peer_subject) {
            Ok(caller) => caller,
            Err(reason) => {
                return self.refuse(path, None, Status::unauthenticated(reason));
            }
        };
        let Some(allowed) = self.policy.methods.get(path) else {
            return self.refuse(
                path,
                Some(&caller),
                Status::permission_denied(format!("method {path} is not open to any caller")),
            );
        };
        if caller.roles.iter().any(|r| allowed.contains(r)) {
            self.metrics.record(path, "allowed");
            Decision::Allowed(caller)
        } else {
            let needs: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            let status = Status::permission_denied(format!(
                "caller {:?} may not call {path}: it needs one of the roles [{}]",
                caller.name,
                needs.join(", ")
            ));
            self.refuse(path, Some(&caller), status)
        }
    }

    fn refuse(&self, path: &str, caller: Option<&Caller>, status: Status) -> Decision {
        let outcome = match status.code() {
            tonic::Code::Unauthenticated => "unauthenticated",
            _ => "permission_denied",
        };
        self.metrics.record(self.policy.method_label(path), outcome);
        self.sink.denied(Denial {
            method: path.to_owned(),
            caller: caller.map(|c| c.name.clone()),
            code: status.code(),
            reason: status.message().to_owned(),
        });
        Decision::Refused(status)
    }

    /// A bearer credential decides when one is sent; otherwise a verified client
    /// certificate whose CN a caller is configured with.
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer_subject: Option<&str>,
    ) -> Result<Caller, &'static str> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return match peer_subject {
                Some(subject) => self
                    .subjects
                    .get(subject)
                    .cloned()
                    .ok_or("the client certificate's subject is not a configured caller"),
                None => Err("missing authorization header: expected `Bearer <service credential>`"),
            };
        };
        let value = value
            .to_str()
            .map_err(|_| "authorization header is not valid text")?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or("authorization header must be `Bearer <service credential>`")?;
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Compare against every credential, so timing does not reveal which one matched.
        let mut found = None;
        for known in &self.credentials {
            if bool::from(known.digest.ct_eq(&digest)) {
                found = Some(known.caller.clone());
            }
        }
        found.ok_or("unknown service credential")
    }
}

/// Tower layer that authenticates callers and enforces an [`AccessPolicy`].
#[derive(Clone)]
pub struct CallerAuthLayer {
    authorizer: Arc<Authorizer>,
}

impl CallerAuthLayer {
    pub fn new(
        credentials: &[CallerCredential],
        policy: AccessPolicy,
        sink: Arc<dyn DenialSink>,
        metrics: crate::metrics::RpcMetrics,
    ) -> Self {
        let caller = |c: &CallerCredential| Caller {
            name: c.name.clone(),
            roles: c.roles.clone(),
            tenants: c.tenants.clone(),
        };
        let subjects = credentials
            .iter()
            .filter_map(|c| Some((c.tls_subject.clone()?, caller(c))))
            .collect();
        let credentials = credentials
            .iter()
            .filter_map(|c| {
                Some(KnownCredential {
                    digest: Sha256::digest(c.token.as_ref()?.expose_secret().as_bytes()).into(),
                    caller: caller(c),
                })
            })
            .collect();
        CallerAuthLayer {
            authorizer: Arc::new(Authorizer {
                credentials,
                subjects,
                policy,
                sink,
                metrics,
            }),
        }
    }
}

impl<S> tower::Layer<S> for CallerAuthLayer {
    type Service = CallerAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerAuthService {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallerAuthService<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
}

impl<S, B> tower::Service<http::Request<B>> for CallerAuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Set by tonic for TLS connections; its certificates passed the handshake's check
        // against `service.tls.client_ca_path`.
        let peer_subject = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs| certs.first().and_then(|leaf| subject_common_name(leaf)));
        match self.authorizer.decide(
            request.uri().path(),
            request.headers(),
            peer_subject.as_deref(),
        ) {
            Decision::Public => Box::pin(self.inner.call(request)),
            Decision::Allowed(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Decision::Refused(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// Adds `authorization: Bearer <token>` to outgoing calls (service-to-service clients).
/// A client that authenticates with its TLS certificate alone sends none.
#[derive(Clone)]
pub struct BearerToken {
    value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerToken {
    pub fn new(token: &secrecy::SecretString) -> Result<Self, crate::ConfigError> {
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {}", token.expose_secret())
                .parse()
                .map_err(|_| crate::ConfigError::invalid("token", "not valid header text"))?;
        value.set_sensitive(true);
        Ok(BearerToken { value: Some(value) })
    }

    /// The token when there is one; none when the client certificate speaks for the caller.
    pub fn optional(token: Option<&secrecy::SecretString>) -> Result<Self, crate::ConfigError> {
        match token {
            Some(token) => BearerToken::new(token),
            None => Ok(BearerToken { value: None }),
        }
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Some(_) => f.write_str("BearerToken([REDACTED])"),
            None => f.write_str("BearerToken(none)"),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SERVICE: &str = "clio_connect.auth.v1.AuthService";

    fn layer(metrics: &crate::metrics::Metrics) -> CallerAuthLayer {
        CallerAuthLayer::new(
            &[],
            AccessPolicy::new().allow(SERVICE, "GetConnection", &[Role::Operator]),
            Arc::new(LogDenials),
            metrics.rpc(),
        )
    }

    #[test]
    fn a_refused_call_is_labelled_by_a_known_method_or_as_unknown() {
        let metrics = crate::metrics::Metrics::new("test");
        let layer = layer(&metrics);
        let no_credential = http::HeaderMap::new();
        let known = format!("/{SERVICE}/GetConnection");
        for path in [known.as_str(), "/attacker/chosen-1", "/attacker/chosen-2"] {
            assert!(matches!(
                layer.authorizer.decide(path, &no_credential, None),
                Decision::Refused(_)
            ));
        }
        let rendered = metrics.render();
        assert!(
            rendered.contains(&format!(
                "method=\"{known}\",outcome=\"unauthenticated\"}} 1"
            )),
            "{rendered}"
        );
        assert!(
            rendered.contains("method=\"unknown\",outcome=\"unauthenticated\"} 2"),
            "{rendered}"
        );
        assert!(!rendered.contains("attacker"), "{rendered}");
    }
}
