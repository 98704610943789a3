//! What auth-svc reports at `/metrics` beside the shared gRPC and outbox families and the
//! key rotation's counter: token leases by outcome, refreshes at Clio by outcome and
//! trigger, and every call to Clio by endpoint and answer.
//!
//! Every label is a fixed set; no connection id, token or Clio text ever becomes one.

use std::sync::Arc;

use clio_api::{Call, CallObserver, ClioError, TokenGrant};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use service_runtime::metrics::{DependencyCalls, Metrics};

use crate::error::AuthError;

/// The answers to a lease (as [`AuthMetrics::leased`] names them).
const LEASE_OUTCOMES: [&str; 7] = [
    "granted",
    "not_found",
    "connection_not_usable",
    "scope_not_granted",
    "clio_unavailable",
    "invalid_argument",
    "error",
];
/// What starts a refresh (`refresh::Due`) and how Clio can answer it
/// ([`AuthMetrics::refreshed`]).
const REFRESH_TRIGGERS: [&str; 3] = ["lease", "proactive", "forced"];
const REFRESH_OUTCOMES: [&str; 4] = ["refreshed", "revoked", "transient", "refused"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    trigger: &'static str,
    outcome: &'static str,
}

/// auth-svc's own families. Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct AuthMetrics {
    leases: Family<LeaseLabels, Counter>,
    /// The `granted` series of `leases`, held so the busiest count skips the family's
    /// lookup.
    granted: Counter,
    refreshes: Family<RefreshLabels, Counter>,
    clio: Arc<ClioCalls>,
}

impl AuthMetrics {
    pub fn registered(metrics: &Metrics) -> AuthMetrics {
        let leases = Family::<LeaseLabels, Counter>::default();
        let granted = leases
            .get_or_create(&LeaseLabels { outcome: "granted" })
            .clone();
        let auth = AuthMetrics {
            leases,
            granted,
            refreshes: Family::default(),
            clio: Arc::new(ClioCalls(DependencyCalls::registered(metrics, "clio"))),
        };
        metrics.register(
            "token_leases",
            "LeaseAccessToken answers: granted, or refused by reason (not_found, \
             connection_not_usable, scope_not_granted, clio_unavailable, invalid_argument, error)",
            auth.leases.clone(),
        );
        metrics.register(
            "token_refreshes",
            "Refreshes at Clio by trigger (lease, proactive, forced) and outcome: refreshed, \
             revoked (invalid_grant: the person must reconnect), transient (after retries), refused",
            auth.refreshes.clone(),
        );
        // Every series exists from the start at 0, so rates are defined before the first
        // lease or refresh.
        for outcome in LEASE_OUTCOMES {
            auth.leases
                .get_or_create(&LeaseLabels { outcome })
                .inc_by(0);
        }
        for (trigger, outcome) in REFRESH_TRIGGERS
            .into_iter()
            .flat_map(|t| REFRESH_OUTCOMES.map(|o| (t, o)))
        {
            auth.refreshes
                .get_or_create(&RefreshLabels { trigger, outcome })
                .inc_by(0);
        }
        auth
    }

    /// What the Clio client reports its calls to.
    pub fn clio_observer(&self) -> Arc<dyn CallObserver> {
        self.clio.clone()
    }

    /// Counts the answer to one `LeaseAccessToken`.
    pub fn leased<T>(&self, leased: &Result<T, AuthError>) {
        let outcome = match leased {
            Ok(_) => {
                self.granted.inc();
                return;
            }
            Err(AuthError::NotFound(_)) => "not_found",
            Err(AuthError::FailedPrecondition(_)) => "connection_not_usable",
            Err(AuthError::PermissionDenied(_)) => "scope_not_granted",
            Err(AuthError::ClioUnavailable(_)) => "clio_unavailable",
            Err(AuthError::InvalidArgument { .. }) => "invalid_argument",
            Err(
                AuthError::AlreadyExists(_)
                | AuthError::Database(_)
                | AuthError::Vault(_)
                | AuthError::Outbox(_)
                | AuthError::Internal(_),
            ) => "error",
        };
        self.leases.get_or_create(&LeaseLabels { outcome }).inc();
    }

    /// Counts what Clio answered a refresh (after its retries), for `trigger`, and hands
    /// the answer on.
    pub fn refreshed(
        &self,
        trigger: &'static str,
        answer: Result<TokenGrant, ClioError>,
    ) -> Result<TokenGrant, ClioError> {
        let outcome = match &answer {
            Ok(_) => "refreshed",
            Err(ClioError::InvalidGrant { .. }) => "revoked",
            Err(error) if error.is_retryable() => "transient",
            Err(_) => "refused",
        };
        self.refreshes
            .get_or_create(&RefreshLabels { trigger, outcome })
            .inc();
        answer
    }
}

/// Calls to Clio, by endpoint and answer.
struct ClioCalls(DependencyCalls);

impl CallObserver for ClioCalls {
    fn called(&self, call: &Call<'_>) {
        self.0
            .record(call.endpoint.name(), call.status, call.elapsed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn leases_and_refreshes_are_counted_by_fixed_outcomes() {
        let metrics = Metrics::new("auth_svc");
        let auth = AuthMetrics::registered(&metrics);
        auth.leased::<()>(&Ok(()));
        auth.leased::<()>(&Err(AuthError::PermissionDenied(
            "grant lacks scope contacts:write".into(),
        )));
        let revoked = ClioError::InvalidGrant {
            description: "revoked".into(),
        };
        let _ = auth.refreshed("lease", Err(revoked));
        let down = ClioError::Transient {
            detail: "503".into(),
        };
        let _ = auth.refreshed("proactive", Err(down));
        auth.clio_observer().called(&Call {
            endpoint: clio_api::Endpoint::Token,
            status: Some(400),
            elapsed: Duration::from_millis(20),
        });
        let rendered = metrics.render();
        for line in [
            "auth_svc_token_leases_total{outcome=\"granted\"} 1",
            "auth_svc_token_leases_total{outcome=\"scope_not_granted\"} 1",
            "auth_svc_token_refreshes_total{trigger=\"lease\",outcome=\"revoked\"} 1",
            "auth_svc_token_refreshes_total{trigger=\"proactive\",outcome=\"transient\"} 1",
            "auth_svc_clio_calls_total{endpoint=\"oauth_token\",class=\"4xx\",code=\"400\"} 1",
        ] {
            assert!(rendered.contains(line), "{line} in {rendered}");
        }
        assert!(!rendered.contains("contacts:write"), "{rendered}");
    }
}
