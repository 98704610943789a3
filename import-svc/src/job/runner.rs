//! Running one import job: check the connection, lease a token, then for each resource
//! page through Clio and commit every page's records together with the checkpoint.
//!
//! A job can stop anywhere (crash, shutdown, lost channel) and run again from its last
//! committed page. Deletions are found by listing: a full sync, or an incremental one's id
//! listing after it fetched the changes, ends by sweeping what its connection did not see
//! since the listing began ([`records::mark_unseen_deleted`]). The connection's next
//! incremental starts at Clio's time when this sync began (the first page's `Date`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clio_api::{ClioError, Lister, Page, PageRequest, RateGates, WaitObserver};
use scope_catalog::Resource;
use service_runtime::clock::SharedClock;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::checkpoints::{self, ResourceRow};
use super::listing::first_page_url;
use super::page_records;
use super::spec::{JobSpec, Mode};
use super::store;
use crate::audit::{self, Auditor, JobContext, RecordError};
use crate::config::ImporterConfig;
use crate::events::{EventKind, Events};
use crate::leases::{Lease, LeaseError, Leases};
use crate::metrics::ImportMetrics;
use crate::records::{self, Target};

/// How a run ended, which decides what happens to the queue message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Cancelled,
    /// The job cannot succeed as asked (Clio refused, connection unusable): ack, recorded.
    Failed(String),
    /// The job is invalid for this connection (unknown, lacks a scope): dead-letter it.
    Refused(String),
    /// Shutdown or lost channel: leave the message for redelivery; the checkpoint stays.
    Interrupted,
    /// Something we depend on is down (auth-svc, Postgres): try again later.
    Retry(String),
}

#[derive(Clone)]
pub struct Runner {
    pub pool: PgPool,
    pub lister: Lister,
    pub gates: RateGates,
    pub leases: Leases,
    pub events: Arc<Events>,
    pub clock: SharedClock,
    pub config: ImporterConfig,
    pub audit: Auditor,
    pub metrics: ImportMetrics,
    /// Connections page writes may hold beside one per job.
    pub write_slots: super::write_slots::WriteSlots,
}

/// Rate-limit and backoff waits, added to the job's total with the next checkpoint.
#[derive(Default)]
pub(super) struct Waits(pub(super) AtomicU64);

impl WaitObserver for Waits {
    fn waited(&self, wait: Duration) {
        self.0.fetch_add(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Why a run stopped before completing; `?` carries it out of the page loops.
pub(super) struct Stop(pub(super) Outcome);

impl From<sqlx::Error> for Stop {
    /// Postgres being unreachable is worth waiting out; Postgres refusing a value (SQLSTATE
    /// class 22) is not, and would be refused on every retry.
    fn from(error: sqlx::Error) -> Self {
        if page_records::is_data_error(&error) {
            Stop(Outcome::Failed(format!(
                "Postgres refused the data: {error}"
            )))
        } else {
            Stop(Outcome::Retry(format!("database: {error}")))
        }
    }
}

impl From<records::RecordError> for Stop {
    fn from(error: records::RecordError) -> Self {
        match error {
            records::RecordError::Database(e) => e.into(),
            records::RecordError::MissingId { .. } => Stop(Outcome::Failed(format!(
                "Clio sent a record without an id: {error}"
            ))),
        }
    }
}

impl From<RecordError> for Stop {
    fn from(error: RecordError) -> Self {
        Stop(Outcome::Retry(format!(
            "cannot record the job's start: {error}"
        )))
    }
}

impl From<LeaseError> for Stop {
    fn from(error: LeaseError) -> Self {
        Stop(match error {
            LeaseError::Refused(reason) => Outcome::Refused(reason),
            LeaseError::Unusable(reason) => Outcome::Failed(reason),
            LeaseError::Unavailable(reason) => Outcome::Retry(reason),
        })
    }
}

/// A lease this close to its end is renewed before the next call, so a long job never
/// sends Clio a token that expires mid-request (or one auth-svc has stopped vouching for).
const LEASE_RENEW_MARGIN: chrono::Duration = chrono::Duration::seconds(30);

/// The job's state while it runs.
pub(super) struct Run<'a> {
    pub(super) spec: &'a JobSpec,
    pub(super) lease: Lease,
    /// A forced refresh was spent on the current 401 episode; cleared by the next call
    /// Clio accepts, so a later, separate expiry gets its own refresh.
    refreshed: bool,
    /// Shared with the page being written while the next is fetched.
    pub(super) waits: &'a Waits,
    pub(super) stop: &'a CancellationToken,
}

impl Runner {
    /// Runs one attempt. `job` learns the connection's firm and account on the way, for
    /// the events recorded about this attempt (here and when it ends).
    #[tracing::instrument(skip_all, fields(job_id = %spec.job_id, connection_id = %spec.connection_id))]
    pub async fn run(
        &self,
        spec: &JobSpec,
        job: &mut JobContext,
        stop: &CancellationToken,
    ) -> Outcome {
        match self.run_inner(spec, job, stop).await {
            Ok(()) => Outcome::Completed,
            Err(Stop(outcome)) => outcome,
        }
    }

    async fn run_inner(
        &self,
        spec: &JobSpec,
        job: &mut JobContext,
        stop: &CancellationToken,
    ) -> Result<(), Stop> {
        // Checked before any Clio call: an unknown connection or a grant without the scope
        // must never reach Clio.
        let connection = self.leases.connection(&spec.connection_id).await?;
        job.learn_connection(&connection);
        store::set_tenant(
            &self.pool,
            spec.job_id,
            &connection.tenant,
            connection.region,
        )
        .await?;
        let required = spec.required_scopes();
        if let Some(missing) = connection.granted.first_missing(&required) {
            return Err(Stop(Outcome::Refused(format!(
                "connection {} grant lacks scope {missing} (granted: {})",
                spec.connection_id, connection.granted
            ))));
        }
        if let Err(reason) = connection.usable {
            return Err(Stop(Outcome::Failed(reason)));
        }
        let purpose = format!("import job {}", spec.job_id);
        let lease = self.metrics.lease(
            self.leases
                .lease(&spec.connection_id, &required, &purpose, false)
                .await,
        )?;
        job.learn_account(&lease.account_id);
        let mut tx = self.pool.begin().await?;
        let attempt = store::set_account(&mut *tx, spec.job_id, &lease.account_id).await?;
        self.audit
            .enqueue(
                &mut tx,
                job,
                proto::common::v1::EventKind::ImportStarted,
                "",
                audit::started_payload(spec, attempt),
            )
            .await?;
        tx.commit().await?;
        self.audit.committed();
        self.events
            .job(EventKind::Started, spec.job_id, &self.pool)
            .await;

        let waits = Waits::default();
        let mut run = Run {
            spec,
            lease,
            refreshed: false,
            waits: &waits,
            stop,
        };
        let rows = checkpoints::resources(&self.pool, spec.job_id, &spec.resources).await?;
        for resource in &spec.resources {
            let row = rows.iter().find(|r| r.resource == resource.as_str());
            let Some(row) = row.cloned() else { continue };
            self.run_resource(&mut run, *resource, row).await?;
        }
        Ok(())
    }

    async fn run_resource(
        &self,
        run: &mut Run<'_>,
        resource: Resource,
        mut row: ResourceRow,
    ) -> Result<(), Stop> {
        if row.phase == "fetch" {
            self.fetch_records(run, resource, &mut row).await?;
        }
        if row.phase == "reconcile" {
            self.reconcile_ids(run, resource, &row).await?;
        }
        Ok(())
    }

    /// One page, re-leasing the token once if Clio says 401.
    pub(super) async fn fetch(&self, run: &mut Run<'_>, url: &Url) -> Result<Page, Stop> {
        let gate = self.gates.gate(&run.spec.connection_id);
        loop {
            self.renew_if_due(run).await?;
            let outcome = self
                .lister
                .page(&PageRequest {
                    url,
                    api_base: &run.lease.api_base,
                    token: &run.lease.token,
                    gate: &gate,
                    budget: run.lease.budget(),
                    cancel: run.stop,
                    observer: run.waits,
                })
                .await;
            match outcome {
                Ok(page) => {
                    // The token works: the 401 episode (if any) is over.
                    run.refreshed = false;
                    return Ok(page);
                }
                Err(ClioError::InvalidToken { .. }) if !run.refreshed => {
                    tracing::info!("clio answered 401; leasing a refreshed token");
                    run.refreshed = true;
                    self.relet(run, "after 401", true).await?;
                }
                Err(ClioError::InvalidToken { .. }) => {
                    return Err(Stop(Outcome::Failed(
                        "Clio rejected the token again after a refresh (401): the grant was probably \
                         revoked; the connection's owner must reconnect"
                            .into(),
                    )));
                }
                Err(ClioError::Cancelled) => return Err(Stop(Outcome::Interrupted)),
                // Clio itself is down (5xx, timeouts, an endless 429 storm) for longer than
                // one page's retries: a dependency outage, waited out like any other; the
                // job resumes from its checkpoint.
                Err(
                    error @ (ClioError::Exhausted { .. }
                    | ClioError::RateLimited { .. }
                    | ClioError::Transient { .. }),
                ) => {
                    return Err(Stop(Outcome::Retry(format!("Clio unavailable: {error}"))));
                }
                Err(
                    error @ (ClioError::Forbidden { .. }
                    | ClioError::Rejected { .. }
                    | ClioError::MalformedPage { .. }
                    | ClioError::ForeignHost { .. }
                    | ClioError::TooLarge { .. }
                    | ClioError::InvalidGrant { .. }
                    | ClioError::InvalidClient { .. }
                    | ClioError::Other { .. }),
                ) => {
                    return Err(Stop(Outcome::Failed(error.to_string())));
                }
            }
        }
    }

    /// Re-leases ahead of the lease's end; auth-svc refreshes the token if it is due.
    async fn renew_if_due(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        if self.clock.now() + LEASE_RENEW_MARGIN < run.lease.expires_at {
            return Ok(());
        }
        tracing::info!(expires_at = %run.lease.expires_at, "token lease about to expire; renewing it");
        self.relet(run, "lease renewal", false).await
    }

    /// Replaces the run's lease with a new one from auth-svc.
    async fn relet(&self, run: &mut Run<'_>, why: &str, force_refresh: bool) -> Result<(), Stop> {
        let purpose = format!("import job {} ({why})", run.spec.job_id);
        let leased = self
            .leases
            .lease(
                &run.spec.connection_id,
                &run.spec.required_scopes(),
                &purpose,
                force_refresh,
            )
            .await;
        run.lease = self.metrics.lease(leased)?;
        Ok(())
    }

    pub(super) async fn check_stop(&self, run: &Run<'_>) -> Result<(), Stop> {
        if store::cancel_requested(&self.pool, run.spec.job_id).await? {
            return Err(Stop(Outcome::Cancelled));
        }
        if run.stop.is_cancelled() {
            return Err(Stop(Outcome::Interrupted));
        }
        Ok(())
    }

    /// When the listing that ends in a deletion sweep began: recorded now if it starts
    /// now (before its first request to Clio), else as the checkpoint kept it. `None` for a
    /// listing resumed from a checkpoint that predates the record (a job in flight across
    /// the upgrade): without its start no sweep is safe, so that listing deletes nothing.
    pub(super) async fn sweep_start(
        &self,
        run: &Run<'_>,
        resource: Resource,
        row: &ResourceRow,
    ) -> Result<Option<DateTime<Utc>>, Stop> {
        if row.next_url.is_none() {
            return Ok(Some(
                checkpoints::start_sweep(&self.pool, run.spec.job_id, resource).await?,
            ));
        }
        if row.sweep_started_at.is_none() {
            tracing::info!(
                resource = resource.as_str(),
                "resumed listing has no recorded start; it will not mark deletions"
            );
        }
        Ok(row.sweep_started_at)
    }

    /// Clio's lists carry no total, so a full, unfiltered sync expects as many records as
    /// the account had live after the previous one: that is what WatchJob's ETA is based
    /// on. A first sync (nothing stored yet) and incremental or filtered jobs have no
    /// estimate, and their ETA stays unknown. A `meta.records` total, should Clio send one,
    /// replaces the estimate with the first page.
    pub(super) async fn expect_total(&self, run: &Run<'_>, resource: Resource) -> Result<(), Stop> {
        if run.spec.mode != Mode::Full || !run.spec.filters.is_empty() {
            return Ok(());
        }
        let live = records::count_live(&self.pool, resource, &run.lease.account_id).await?;
        if live > 0 {
            checkpoints::set_expected_total(&self.pool, run.spec.job_id, resource, live).await?;
        }
        Ok(())
    }

    /// Where a page of `resource` is written, for the account the lease is for (the same
    /// through every renewal: a lease is for one connection).
    pub(super) fn target<'a>(
        &self,
        spec: &'a JobSpec,
        account_id: &'a str,
        resource: Resource,
    ) -> Target<'a> {
        Target {
            resource,
            account_id,
            connection_id: &spec.connection_id,
            job_id: spec.job_id,
            now: self.clock.now(),
        }
    }

    /// Where an incremental job starts: the job's own `updated_since`, else the connection's
    /// high-water mark (Clio's time when the previous sync began) less a small overlap
    /// (`importer.incremental_overlap_secs`: clock granularity and Clio's own commit lag);
    /// a full job (or a first sync) reads everything.
    pub(super) async fn since(
        &self,
        spec: &JobSpec,
        resource: Resource,
    ) -> Result<Option<DateTime<Utc>>, Stop> {
        if spec.mode == Mode::Full {
            return Ok(None);
        }
        if spec.updated_since.is_some() {
            return Ok(spec.updated_since);
        }
        let mark = checkpoints::high_water(&self.pool, &spec.connection_id, resource).await?;
        Ok(mark.map(|m| m - chrono::Duration::seconds(self.config.incremental_overlap_secs)))
    }

    /// Where a listing (re)starts: its checkpoint's next page, else its first page
    /// ([`first_page_url`]).
    pub(super) fn start_url(
        &self,
        run: &Run<'_>,
        resource: Resource,
        row: &ResourceRow,
        since: Option<DateTime<Utc>>,
        ids_only: bool,
    ) -> Result<Url, Stop> {
        if let Some(next) = &row.next_url {
            return Url::parse(next)
                .map_err(|e| Stop(Outcome::Failed(format!("bad Clio URL {next:?}: {e}"))));
        }
        let api_base = &run.lease.api_base;
        let page_size = self.config.page_size;
        first_page_url(api_base, resource, run.spec, since, ids_only, page_size).map_err(|e| {
            Stop(Outcome::Failed(format!(
                "bad Clio URL for {} under {api_base}: {e}",
                resource.as_str()
            )))
        })
    }
}

pub(super) fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
