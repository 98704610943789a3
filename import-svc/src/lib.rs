//! import-svc: imports Clio data in bulk through a job queue.
//!
//! Jobs arrive on RabbitMQ (or through `SubmitJob`, which publishes to the same queue). The
//! consumer checks each job against the connection's grant (through auth-svc), leases a
//! token, pages through Clio within its rate limit, and commits records with a checkpoint
//! per page, so a crash or redelivery resumes where it stopped.
//!
//! The service is this library; the binary only loads config and calls [`run`], and tests
//! call the same [`run`] on `127.0.0.1:0`.

pub(crate) mod access;
pub(crate) mod api;
pub mod app_budget;
pub(crate) mod audit;
pub mod config;
mod error;
pub(crate) mod events;
pub mod job;
pub(crate) mod leases;
pub mod metrics;
pub mod queue;
pub mod records;
pub(crate) mod retention;
pub mod suggestions;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use audit_outbox::{OutboxDenials, Relay};
use futures_util::future::BoxFuture;
use proto::imports::v1::import_service_server::ImportServiceServer;
pub use service_runtime::Options;
use service_runtime::background::STOP_GRACE;
use service_runtime::caller_auth::DenialSink;
use service_runtime::clock::SharedClock;
use service_runtime::database::connect_and_migrate;
use service_runtime::health::{DependencyCheck, PostgresCheck};
use service_runtime::metrics::Metrics;
use service_runtime::server::{ServerParts, serve};
use service_runtime::{AccessPolicy, Background, CancellationToken, Role};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use config::Config;
use metrics::ImportMetrics;

/// Full gRPC name of `ImportService`, as its generated server names it.
pub(crate) const IMPORT_SERVICE: &str = <ImportServiceServer<api::Api> as NamedService>::NAME;
use suggestions::api::SUGGESTION_SERVICE;

/// This service's schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which roles may call which RPC.
pub fn access_policy() -> AccessPolicy {
    AccessPolicy::new()
        .allow(
            IMPORT_SERVICE,
            "SubmitJob",
            &[Role::JobSubmitter, Role::Operator],
        )
        .allow(
            IMPORT_SERVICE,
            "GetJob",
            &[Role::JobSubmitter, Role::Operator, Role::Compliance],
        )
        .allow(
            IMPORT_SERVICE,
            "ListJobs",
            &[Role::JobSubmitter, Role::Operator, Role::Compliance],
        )
        .allow(
            IMPORT_SERVICE,
            "CancelJob",
            &[Role::JobSubmitter, Role::Operator],
        )
        .allow(
            IMPORT_SERVICE,
            "WatchJob",
            &[Role::JobSubmitter, Role::Operator, Role::Compliance],
        )
        .allow(IMPORT_SERVICE, "EnableWebhooks", &[Role::Operator])
        .allow(IMPORT_SERVICE, "DisableWebhooks", &[Role::Operator])
        .allow(
            IMPORT_SERVICE,
            "ListWebhooks",
            &[Role::Operator, Role::Compliance],
        )
        .allow(IMPORT_SERVICE, "ListRecords", &[Role::DataReader])
        .allow(IMPORT_SERVICE, "ExportRecords", &[Role::DataReader])
        .allow(
            SUGGESTION_SERVICE,
            "DetectUnbilledTime",
            &[Role::BillingReviewer, Role::BillingApprover, Role::Operator],
        )
        .allow(
            SUGGESTION_SERVICE,
            "ListSuggestions",
            &[
                Role::BillingReviewer,
                Role::BillingApprover,
                Role::Operator,
                Role::Compliance,
            ],
        )
        .allow(
            SUGGESTION_SERVICE,
            "GetSuggestion",
            &[
                Role::BillingReviewer,
                Role::BillingApprover,
                Role::Operator,
                Role::Compliance,
            ],
        )
        .allow(
            SUGGESTION_SERVICE,
            "ApproveSuggestion",
            &[Role::BillingReviewer, Role::BillingApprover],
        )
        .allow(
            SUGGESTION_SERVICE,
            "RejectSuggestion",
            &[Role::BillingReviewer, Role::BillingApprover],
        )
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, listener, shutdown, Options::default()).await
}

/// [`run`] with [`Options`] (tests move the clock for retention).
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    options: Options,
) -> anyhow::Result<()> {
    let clock = options.clock;
    let pool = connect_and_migrate(&config.service.database, &MIGRATOR).await?;
    // Stopped after the server, in this order: the consumer hands in-flight jobs back and
    // the other workers finish, then the relay delivers what they wrote
    // (service_runtime::background).
    let workers = Background::new("import-svc workers");
    let delivery = Background::new("import-svc audit delivery");
    let metrics = Metrics::new("import_svc");
    let import_metrics = ImportMetrics::registered(&metrics);
    let (audit, denials) = start_audit(&config, &pool, &metrics, &delivery, &clock)?;
    let leases = leases::Leases::new(&config.auth)?.with_budgets(app_budget::AppBudgets::new(
        pool.clone(),
        config.app_budget.clone(),
        import_metrics.clone(),
    ));
    let topology = queue::topology::Topology::of(&config.amqp);
    let publisher = Arc::new(queue::publisher::Publisher::new(Duration::from_millis(
        config.amqp.confirm_timeout_ms,
    )));
    let events = Arc::new(events::Events::new(
        publisher.clone(),
        topology.names.events_exchange.clone(),
    ));
    // Each connection's Clio rate gate, shared by its jobs and its billing suggestions.
    let gates = clio_api::RateGates::default();
    let shared = Shared {
        pool: pool.clone(),
        gates: gates.clone(),
        leases,
        audit,
        topology,
        publisher,
        events,
        clock: clock.clone(),
        metrics: import_metrics,
    };
    let connected = start_workers(&config, &shared, &workers)?;
    ImportMetrics::watch_amqp(&metrics, connected.clone());
    let webhooks = start_webhooks(&config, &shared, &workers).await?;

    let api = api::Api {
        pool: pool.clone(),
        publisher: shared.publisher,
        topology: shared.topology,
        shutdown: shutdown.clone(),
        audit: shared.audit,
        leases: shared.leases,
        refusals: access::Refusals(denials.clone()),
        metrics: shared.metrics,
        webhooks,
    };
    let suggestions = suggestion_service(&config, &api, &gates, &clock)?;
    workers.spawn(suggestions.writer.clone().run(workers.token()));
    let checks: Vec<Arc<dyn DependencyCheck>> = vec![
        Arc::new(PostgresCheck(pool.clone())),
        Arc::new(RabbitMqCheck(connected)),
    ];
    let parts = ServerParts {
        routes: Routes::new(ImportServiceServer::new(api)).add_service(
            proto::suggestions::v1::suggestion_service_server::SuggestionServiceServer::new(
                suggestions,
            ),
        ),
        http: audit_outbox::health_router(pool.clone()),
        // Counts of pending and quarantined audit events, nothing else (like /metrics).
        policy: access_policy().public(audit_outbox::HEALTH_PATH),
        health_services: vec![IMPORT_SERVICE.to_owned(), SUGGESTION_SERVICE.to_owned()],
        checks,
        metrics,
        denials: Some(denials),
    };
    let served = serve(&config.service, parts, listener, shutdown.clone()).await;
    // The consumer hands in-flight jobs back within the shutdown grace.
    workers
        .stop_within(Duration::from_millis(config.service.shutdown_grace_ms) + STOP_GRACE)
        .await;
    delivery.stop().await;
    pool.close().await;
    served
}

/// The webhook receiver on its own listener and the subscriptions' upkeep, when
/// `webhooks.listen` is set. Returns what `EnableWebhooks` needs.
async fn start_webhooks(
    config: &Config,
    shared: &Shared,
    workers: &Background,
) -> anyhow::Result<Option<webhooks::manager::Webhooks>> {
    use secrecy::ExposeSecret;
    let Some(listen) = &config.webhooks.listen else {
        return Ok(None);
    };
    let key =
        config.webhooks.secret_key.as_ref().ok_or_else(|| {
            anyhow::anyhow!("webhooks.secret_key is required with webhooks.listen")
        })?;
    let sealer = Arc::new(
        webhooks::sealing::Sealer::from_base64(key.expose_secret())
            .map_err(|problem| anyhow::anyhow!("webhooks.secret_key {problem}"))?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("webhooks.listen {listen}: {e}"))?;
    let base_url = match &config.webhooks.public_url {
        Some(url) => url.clone(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let http = clio_api::HttpSettings {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_millis(config.importer.request_timeout_ms),
    };
    let manager = webhooks::manager::Webhooks {
        pool: shared.pool.clone(),
        leases: shared.leases.clone(),
        client: clio_api::WebhookClient::new(http)?,
        gates: shared.gates.clone(),
        reserve: config.importer.rate_limit_reserve,
        audit: shared.audit.clone(),
        config: Arc::new(config.webhooks.clone()),
        base_url,
        clock: shared.clock.clone(),
        publisher: shared.publisher.clone(),
        topology: shared.topology.clone(),
        watch: Arc::default(),
    };
    let receiver = Arc::new(webhooks::receiver::Receiver::new(
        manager.clone(),
        sealer,
        clio_api::Creator::new(http)?,
        shared.metrics.clone(),
    ));
    let app = receiver
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = workers.token();
    tracing::info!(address = %listener.local_addr()?, "webhook receiver listening");
    workers.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "webhook receiver stopped");
        }
    });
    workers.spawn(manager.clone().run_upkeep(workers.token()));
    Ok(Some(manager))
}

/// The audit path: events and refused calls go to the outbox, and `delivery` relays them
/// to audit-svc.
/// `SuggestionService`, its Clio calls sharing each connection's rate gate with the jobs.
fn suggestion_service(
    config: &Config,
    api: &api::Api,
    gates: &clio_api::RateGates,
    clock: &SharedClock,
) -> anyhow::Result<suggestions::api::Suggestions> {
    let request_timeout = Duration::from_millis(config.importer.request_timeout_ms);
    let clio = suggestions::clio::ClioCalls {
        lister: job::listing::lister(&config.importer)?.with_observer(api.metrics.clio_observer()),
        creator: clio_api::Creator::new(clio_api::HttpSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout,
        })?,
        gates: gates.clone(),
        reserve: config.importer.rate_limit_reserve,
    };
    let writer = suggestions::write::Writer {
        pool: api.pool.clone(),
        leases: api.leases.clone(),
        clio: clio.clone(),
        audit: api.audit.clone(),
        // An attempt is a lease, a lookup (retried inside) and a create: held well past
        // what they can take, so a slow attempt is never overtaken by another.
        hold: request_timeout * (config.importer.max_page_attempts + 2) + Duration::from_secs(30),
        retry_delay: Duration::from_millis(config.suggestions.write_retry_delay_ms),
        interval: Duration::from_millis(config.suggestions.write_interval_ms),
        revocation_check: Duration::from_millis(config.suggestions.revocation_check_ms),
    };
    Ok(suggestions::api::Suggestions {
        pool: api.pool.clone(),
        detector: suggestions::detect::Detector {
            pool: api.pool.clone(),
            leases: api.leases.clone(),
            clio,
            clock: clock.clone(),
            rules: config.suggestions.rules.clone(),
        },
        writer,
        audit: api.audit.clone(),
        refusals: api.refusals.clone(),
        max_range_days: config.suggestions.max_range_days,
    })
}

fn start_audit(
    config: &Config,
    pool: &PgPool,
    metrics: &Metrics,
    delivery: &Background,
    clock: &SharedClock,
) -> anyhow::Result<(audit::Auditor, Arc<dyn DenialSink>)> {
    let relay = Relay::from_config(pool.clone(), &config.audit)?.map(|r| r.with_metrics(metrics));
    let waker = relay.as_ref().map(Relay::waker).unwrap_or_default();
    let audit = audit::Auditor::new(&config.audit.platform_tenant, waker.clone());
    let denials = Arc::new(OutboxDenials::start(
        pool.clone(),
        audit::SOURCE,
        config.audit.platform_tenant.clone(),
        Some(waker),
        clock.clone(),
    ));
    if let Some(relay) = relay {
        delivery.spawn(relay.run(delivery.token()));
    }
    Ok((audit, denials))
}

/// What the gRPC API and the queue workers share.
struct Shared {
    pool: PgPool,
    /// Each connection's Clio rate gate, shared by its import jobs and detections.
    gates: clio_api::RateGates,
    leases: leases::Leases,
    audit: audit::Auditor,
    topology: queue::topology::Topology,
    publisher: Arc<queue::publisher::Publisher>,
    events: Arc<events::Events>,
    clock: SharedClock,
    metrics: ImportMetrics,
}

/// The pool of job locks: one connection per job slot, opened as jobs start (same server
/// and login as `pool`). A session advisory lock lives as long as its connection, so each
/// running job keeps one for its whole run, whatever it waits for.
fn job_lock_pool(pool: &PgPool, slots: usize) -> PgPool {
    PgPoolOptions::new()
        .max_connections(u32::try_from(slots).unwrap_or(u32::MAX))
        .min_connections(0)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Starts the job consumer, the reconciler and retention on `workers`. Returns the flag
/// the consumer holds up while it has a live AMQP session (RabbitMQ's health).
fn start_workers(
    config: &Config,
    shared: &Shared,
    workers: &Background,
) -> anyhow::Result<Arc<AtomicBool>> {
    let runner = job::runner::Runner {
        pool: shared.pool.clone(),
        lister: job::listing::lister(&config.importer)?
            .with_observer(shared.metrics.clio_observer()),
        gates: shared.gates.clone(),
        leases: shared.leases.clone(),
        events: shared.events.clone(),
        clock: shared.clock.clone(),
        config: config.importer.clone(),
        audit: shared.audit.clone(),
        metrics: shared.metrics.clone(),
        write_slots: job::write_slots::WriteSlots::for_pool(
            config.service.database.max_connections,
            config.importer.max_concurrent_jobs,
        ),
    };
    let connected = Arc::new(AtomicBool::new(false));
    let consumer = queue::consumer::Consumer {
        config: config.amqp.clone(),
        topology: shared.topology.clone(),
        runner,
        publisher: shared.publisher.clone(),
        events: shared.events.clone(),
        pool: shared.pool.clone(),
        locks: job_lock_pool(&shared.pool, config.importer.max_concurrent_jobs),
        audit: shared.audit.clone(),
        max_concurrent_jobs: config.importer.max_concurrent_jobs,
        max_jobs_per_connection: config.importer.max_jobs_per_connection,
        shutdown_grace: Duration::from_millis(config.service.shutdown_grace_ms),
        max_outage: Duration::from_secs(config.importer.max_outage_secs),
        connected: connected.clone(),
        metrics: shared.metrics.clone(),
    };
    let reconciler = queue::reconciler::Reconciler {
        pool: shared.pool.clone(),
        publisher: shared.publisher.clone(),
        topology: shared.topology.clone(),
        events: shared.events.clone(),
        audit: shared.audit.clone(),
        config: config.importer.clone(),
        metrics: shared.metrics.clone(),
    };
    workers.spawn(consumer.run(workers.token()));
    workers.spawn(reconciler.run(workers.token()));
    workers.spawn(retention::run(
        shared.pool.clone(),
        config.retention.clone(),
        shared.clock.clone(),
        workers.token(),
    ));
    Ok(connected)
}

/// RabbitMQ is healthy while the consumer holds a live session.
struct RabbitMqCheck(Arc<AtomicBool>);

impl DependencyCheck for RabbitMqCheck {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("no live AMQP session".into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every RPC import-svc serves has a policy entry (else every call is refused), and the
    /// policy names no RPC the contracts do not declare (a typo, a renamed RPC).
    #[test]
    fn the_access_policy_names_exactly_the_rpcs_served() {
        let named: BTreeSet<String> = access_policy().methods().map(str::to_owned).collect();
        assert_eq!(
            named,
            harness::declared_rpc_paths(&[IMPORT_SERVICE, SUGGESTION_SERVICE])
        );
    }
}
