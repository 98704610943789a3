//! What import-svc reports at `/metrics` beside the shared gRPC and outbox families: jobs
//! (ended, by final status; running now), records (written, deleted and skipped, by
//! resource), Clio calls (by resource and answer) and rate-limit waits, whether the AMQP
//! session is up, and token leases as auth-svc answered them.
//!
//! Every label is a fixed set: a final status, a resource of the catalogue (anything else
//! Clio's links name is `other`), an HTTP status class and code, a lease outcome. Running
//! jobs are this process's; the dashboards sum them over replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clio_api::{Call, CallObserver, Endpoint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use scope_catalog::Resource;
use service_runtime::metrics::{DependencyCalls, Metrics};

use crate::job::store::JobStatus;
use crate::leases::LeaseError;

/// How a job can end.
const FINAL_STATUSES: [JobStatus; 4] = [
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
    JobStatus::DeadLettered,
];

/// How auth-svc can answer a lease (as [`ImportMetrics::lease`] names them).
const LEASE_OUTCOMES: [&str; 4] = ["granted", "refused", "unusable", "unavailable"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// import-svc's own families. Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct ImportMetrics {
    jobs_ended: Family<StatusLabels, Counter>,
    jobs_running: Gauge,
    jobs_waiting: Gauge,
    jobs_deferred: Counter,
    app_budget_waits: Counter,
    app_budget_unavailable: Counter,
    webhook_requests: Family<OutcomeLabels, Counter>,
    written: Family<ResourceLabels, Counter>,
    deleted: Family<ResourceLabels, Counter>,
    skipped: Family<ResourceLabels, Counter>,
    leases: Family<OutcomeLabels, Counter>,
    clio: Arc<ClioMetrics>,
}

impl ImportMetrics {
    /// Registers import-svc's families in `metrics`.
    pub fn registered(metrics: &Metrics) -> ImportMetrics {
        let import = ImportMetrics {
            jobs_ended: Family::default(),
            jobs_running: Gauge::default(),
            jobs_waiting: Gauge::default(),
            jobs_deferred: Counter::default(),
            app_budget_waits: Counter::default(),
            app_budget_unavailable: Counter::default(),
            webhook_requests: Family::default(),
            written: Family::default(),
            deleted: Family::default(),
            skipped: Family::default(),
            leases: Family::default(),
            clio: Arc::new(ClioMetrics::registered(metrics)),
        };
        metrics.register(
            "records_written",
            "Clio records written (inserted or changed), by resource",
            import.written.clone(),
        );
        metrics.register(
            "records_deleted",
            "Records marked deleted because Clio no longer lists them, by resource",
            import.deleted.clone(),
        );
        metrics.register(
            "records_skipped",
            "Clio records left out as unstorable (listed in skipped_records), by resource",
            import.skipped.clone(),
        );
        metrics.register(
            "jobs_ended",
            "Import jobs ended, by final status (completed, failed, cancelled, dead_lettered)",
            import.jobs_ended.clone(),
        );
        metrics.register(
            "jobs_running",
            "Import jobs this process is running now",
            import.jobs_running.clone(),
        );
        metrics.register(
            "jobs_waiting",
            "Jobs received and held by this process's scheduler, waiting for a slot or their connection's turn",
            import.jobs_waiting.clone(),
        );
        metrics.register(
            "jobs_deferred",
            "Jobs parked in the delay tier because their connection had enough jobs running or waiting",
            import.jobs_deferred.clone(),
        );
        metrics.register(
            "app_budget_waits",
            "Times a Clio request waited for a place in its app's shared budget",
            import.app_budget_waits.clone(),
        );
        metrics.register(
            "app_budget_unavailable",
            "Clio requests sent without a place in their app's budget because Postgres could not be asked",
            import.app_budget_unavailable.clone(),
        );
        metrics.register(
            "webhook_requests",
            "Requests to the webhook receiver, by outcome (handshake, applied, unchanged, refused_*, unknown_path)",
            import.webhook_requests.clone(),
        );
        metrics.register(
            "token_leases",
            "Token leases asked of auth-svc, by outcome (granted, refused, unusable, unavailable)",
            import.leases.clone(),
        );
        import.start_at_zero();
        import
    }

    /// Every series of a fixed label set exists from the start at 0, so a rate over it is
    /// defined and a dashboard shows 0 rather than no data before the first job.
    fn start_at_zero(&self) {
        for status in FINAL_STATUSES {
            let labels = StatusLabels {
                status: status.as_str(),
            };
            self.jobs_ended.get_or_create(&labels).inc_by(0);
        }
        for resource in Resource::ALL {
            let labels = ResourceLabels {
                resource: resource.as_str(),
            };
            for family in [&self.written, &self.deleted, &self.skipped] {
                family.get_or_create(&labels).inc_by(0);
            }
        }
        for outcome in LEASE_OUTCOMES {
            self.leases
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
        }
    }

    /// Reports whether the job consumer holds an AMQP session (`amqp_connected`, 0 or 1),
    /// read from `connected` on scrape.
    pub fn watch_amqp(metrics: &Metrics, connected: Arc<AtomicBool>) {
        let gauge = Gauge::<i64>::default();
        metrics.register(
            "amqp_connected",
            "1 while the job consumer holds a live AMQP session, else 0",
            gauge.clone(),
        );
        metrics.refresh_on_scrape(move || {
            gauge.set(i64::from(connected.load(Ordering::SeqCst)));
            std::future::ready(())
        });
    }

    /// What the Clio list reader reports its calls and waits to.
    pub fn clio_observer(&self) -> Arc<dyn CallObserver> {
        self.clio.clone()
    }

    /// A job ended with the final `status` (recorded, after its commit).
    pub fn job_ended(&self, status: JobStatus) {
        self.jobs_ended
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .inc();
    }

    /// The scheduler holds `waiting` jobs now.
    pub fn set_jobs_waiting(&self, waiting: usize) {
        self.jobs_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// A job was parked for its connection's turn.
    pub fn job_deferred(&self) {
        self.jobs_deferred.inc();
    }

    /// A request found its app's budget full and waits.
    pub fn app_budget_waited(&self) {
        self.app_budget_waits.inc();
    }

    /// A request went ahead without asking its app's budget.
    pub fn app_budget_unavailable(&self) {
        self.app_budget_unavailable.inc();
    }

    /// A request to the webhook receiver ended with `outcome`.
    pub fn webhook_request(&self, outcome: &'static str) {
        self.webhook_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a job as running until the guard is dropped.
    pub fn job_running(&self) -> RunningJob {
        self.jobs_running.inc();
        RunningJob(self.jobs_running.clone())
    }

    /// A committed page of `resource`: records written, marked deleted, and skipped.
    pub fn page_stored(&self, resource: Resource, written: i64, deleted: i64, skipped: u64) {
        let labels = ResourceLabels {
            resource: resource.as_str(),
        };
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        self.written.get_or_create(&labels).inc_by(count(written));
        self.deleted.get_or_create(&labels).inc_by(count(deleted));
        self.skipped.get_or_create(&labels).inc_by(skipped);
    }

    /// Counts a lease's outcome and hands it on.
    pub fn lease<T>(&self, leased: Result<T, LeaseError>) -> Result<T, LeaseError> {
        let outcome = match &leased {
            Ok(_) => "granted",
            Err(LeaseError::Refused(_)) => "refused",
            Err(LeaseError::Unusable(_)) => "unusable",
            Err(LeaseError::Unavailable(_)) => "unavailable",
        };
        self.leases.get_or_create(&OutcomeLabels { outcome }).inc();
        leased
    }
}

/// A running job, counted in `jobs_running` while it lives.
pub struct RunningJob(Gauge);

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Clio calls by resource and answer, and the time requests waited for the rate limit.
struct ClioMetrics {
    calls: DependencyCalls,
    rate_limit_waits: Counter,
    rate_limit_wait_seconds: Counter<f64, AtomicU64>,
}

impl ClioMetrics {
    fn registered(metrics: &Metrics) -> ClioMetrics {
        let clio = ClioMetrics {
            calls: DependencyCalls::registered(metrics, "clio"),
            rate_limit_waits: Counter::default(),
            rate_limit_wait_seconds: Counter::default(),
        };
        metrics.register(
            "clio_rate_limit_waits",
            "Clio requests held back for their token's rate-limit window",
            clio.rate_limit_waits.clone(),
        );
        metrics.register(
            "clio_rate_limit_wait_seconds",
            "Time Clio requests waited for their token's rate-limit window",
            clio.rate_limit_wait_seconds.clone(),
        );
        clio
    }
}

impl CallObserver for ClioMetrics {
    fn called(&self, call: &Call<'_>) {
        self.calls
            .record(endpoint_label(call.endpoint), call.status, call.elapsed);
    }

    fn rate_limit_waited(&self, waited: Duration) {
        self.rate_limit_waits.inc();
        self.rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
    }
}

/// A list page is labelled by its resource when the catalogue has it: the name comes from
/// Clio's `next` links, so anything else is `other`.
fn endpoint_label(endpoint: Endpoint<'_>) -> &'static str {
    match endpoint {
        Endpoint::List(resource) => resource
            .parse::<Resource>()
            .map_or("other", Resource::as_str),
        Endpoint::Token | Endpoint::Deauthorize | Endpoint::WhoAmI => endpoint.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_are_labelled_by_a_known_resource_or_other() {
        assert_eq!(endpoint_label(Endpoint::List("contacts")), "contacts");
        assert_eq!(
            endpoint_label(Endpoint::List("calendar_entries")),
            "calendar_entries"
        );
        assert_eq!(endpoint_label(Endpoint::List("../../etc/passwd")), "other");
        assert_eq!(endpoint_label(Endpoint::Token), "oauth_token");
    }

    #[test]
    fn jobs_records_and_leases_are_counted_by_fixed_labels() {
        let metrics = Metrics::new("import_svc");
        let import = ImportMetrics::registered(&metrics);
        let running = import.job_running();
        import.page_stored(Resource::Contacts, 200, 3, 1);
        let _ = import.lease::<()>(Err(LeaseError::Unusable("revoked".into())));
        import.job_ended(JobStatus::DeadLettered);
        let rendered = metrics.render();
        for line in [
            "import_svc_jobs_running 1",
            "import_svc_records_written_total{resource=\"contacts\"} 200",
            "import_svc_records_deleted_total{resource=\"contacts\"} 3",
            "import_svc_records_skipped_total{resource=\"contacts\"} 1",
            "import_svc_token_leases_total{outcome=\"unusable\"} 1",
            "import_svc_jobs_ended_total{status=\"dead_lettered\"} 1",
        ] {
            assert!(rendered.contains(line), "{line} in {rendered}");
        }
        drop(running);
        assert!(metrics.render().contains("import_svc_jobs_running 0"));
    }
}
