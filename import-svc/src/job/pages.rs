//! The page loops of a job: the fetch phase (records, stored page by page with their
//! checkpoint) and the reconcile phase (ids, marked seen).
//!
//! Speed without giving up a guarantee:
//! - **Pipelined.** While page N is written, page N+1 is already on its way from Clio (its
//!   URL is in page N). Clio's wait and Postgres's work overlap instead of adding up. The
//!   checkpoint still moves one committed page at a time, so a crash resumes exactly where
//!   it did before; a page fetched ahead and never written is simply fetched again.
//! - **Asynchronous page commits.** A page's transaction (records, skipped records,
//!   checkpoint) commits without waiting for its WAL flush (`synchronous_commit = off`,
//!   for that transaction only). Should Postgres itself crash, the last pages are lost
//!   *together with* their checkpoint, so the job resumes from an earlier page and nothing
//!   is inconsistent. Everything that leaves Postgres stays durable: the job's end, its
//!   audit events and the queue acknowledgement follow synchronous commits, and a
//!   synchronous commit flushes every earlier one.
//! - **Progress events at most every [`PROGRESS_EVERY`]** (and at a listing's end), not
//!   per page: each costs two reads and a confirmed publish. A requested cancel is looked
//!   for as often (it is a read too); shutdown is seen at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clio_api::Page;
use scope_catalog::Resource;
use sqlx::{Postgres, Transaction};
use url::Url;

use super::checkpoints::{self, CheckpointDelta, ResourceRow};
use super::page_records;
use super::runner::{Run, Runner, Stop, Waits, len_i64};
use super::spec::{JobSpec, Mode};
use crate::records::{self, Upserted};

/// The most often a running job publishes a progress event.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What writing one page needs, copied out of the run so the next page can be fetched
/// (which may renew the lease) while this one is written.
struct PageSink<'a> {
    spec: &'a JobSpec,
    waits: &'a Waits,
    account_id: String,
    resource: Resource,
    /// When the listing that ends in a deletion sweep began, if this listing sweeps.
    sweep_started: Option<DateTime<Utc>>,
    /// The phase after the listing's last page.
    phase_after_last: &'static str,
}

/// A job's progress events, published at most every [`PROGRESS_EVERY`].
struct Progress {
    last: Option<Instant>,
}

impl Progress {
    fn due(&mut self, last_page: bool) -> bool {
        let due = last_page || self.last.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

impl Runner {
    /// The fetch phase: pages of records, each stored with its checkpoint. A full,
    /// unfiltered listing ends by sweeping what it did not see; an incremental one moves on
    /// to the reconcile phase.
    pub(super) async fn fetch_records(
        &self,
        run: &mut Run<'_>,
        resource: Resource,
        row: &mut ResourceRow,
    ) -> Result<(), Stop> {
        let spec = run.spec;
        let listing_all = spec.filters.is_empty();
        if row.next_url.is_none() && row.records_total.is_none() {
            self.expect_total(run, resource).await?;
        }
        let since = self.since(spec, resource).await?;
        let sweep_started = match spec.mode == Mode::Full && listing_all {
            true => self.sweep_start(run, resource, row).await?,
            false => None,
        };
        // After the last page: a full, unfiltered listing has seen every record, so the
        // rest are deleted; an incremental one lists ids next to find deletions.
        let phase_after_last = match (spec.mode, listing_all) {
            (Mode::Incremental, true) => "reconcile",
            _ => "done",
        };
        let sink = PageSink {
            spec,
            waits: run.waits,
            account_id: run.lease.account_id.clone(),
            resource,
            sweep_started,
            phase_after_last,
        };
        // Only the listing's first page says when it began (a resumed job kept it).
        let mut clio_started_at = None;
        let first_page = row.next_url.is_none();
        let url = self.start_url(run, resource, row, since, false)?;
        let mut page = self.fetch(run, &url).await?;
        if first_page {
            clio_started_at = page.server_date;
        }
        let mut progress = Progress { last: None };
        loop {
            let write = self.write_page(&sink, &page, clio_started_at.take());
            // The next page is fetched while this one is written.
            let (written, next) = match &page.next {
                Some(next_url) => {
                    let (written, next) = tokio::join!(write, self.fetch(run, next_url));
                    (written, Some(next))
                }
                None => (write.await, None),
            };
            let upserted = written?;
            row.max_updated_at = row.max_updated_at.max(upserted.max_updated_at);
            if progress.due(next.is_none()) {
                self.events
                    .page(spec.job_id, resource, page.records.len(), &self.pool)
                    .await;
                // A cancel is looked for as often as progress is told (a read each).
                self.check_stop(run).await?;
            } else if run.stop.is_cancelled() {
                self.check_stop(run).await?;
            }
            match next {
                Some(next) => page = next?,
                None => break,
            }
        }
        row.phase = phase_after_last.into();
        row.next_url = None;
        Ok(())
    }

    /// Stores one fetched page with its checkpoint in one transaction.
    async fn write_page(
        &self,
        sink: &PageSink<'_>,
        page: &Page,
        clio_started_at: Option<DateTime<Utc>>,
    ) -> Result<Upserted, Stop> {
        let last = page.next.is_none();
        let mut tx = self.begin_page().await?;
        let target = self.target(sink.spec, &sink.account_id, sink.resource);
        let stored =
            page_records::store_page(&mut tx, &target, &page.records, &page.skipped).await?;
        let upserted = stored.upserted;
        let deleted = match sink.sweep_started {
            Some(started) if last => {
                records::mark_unseen_deleted(&mut tx, &target, started).await?
            }
            _ => 0,
        };
        let delta = CheckpointDelta {
            phase: if last { sink.phase_after_last } else { "fetch" },
            next_url: page.next.as_ref().map(Url::as_str),
            pages: 1,
            fetched: len_i64(page.records.len() + page.skipped.len()),
            written: i64::try_from(upserted.rows).unwrap_or(i64::MAX),
            deleted: i64::try_from(deleted).unwrap_or(i64::MAX),
            total: page.total.and_then(|t| i64::try_from(t).ok()),
            max_updated_at: upserted.max_updated_at,
            clio_started_at,
        };
        self.commit_page(tx, sink.spec, sink.waits, sink.resource, &delta)
            .await?;
        self.metrics
            .page_stored(sink.resource, delta.written, delta.deleted, stored.skipped);
        Ok(upserted)
    }

    /// The reconcile phase of an incremental job: every id Clio lists is marked seen, and
    /// the rest are swept as deleted after the last page.
    pub(super) async fn reconcile_ids(
        &self,
        run: &mut Run<'_>,
        resource: Resource,
        row: &ResourceRow,
    ) -> Result<(), Stop> {
        let sweep_started = self.sweep_start(run, resource, row).await?;
        let mut url = self.start_url(run, resource, row, None, true)?;
        loop {
            let page = self.fetch(run, &url).await?;
            let last = page.next.is_none();
            let mut tx = self.begin_page().await?;
            let target = self.target(run.spec, &run.lease.account_id, resource);
            records::mark_seen(&mut tx, &target, &page.records).await?;
            let deleted = match sweep_started {
                Some(started) if last => {
                    records::mark_unseen_deleted(&mut tx, &target, started).await?
                }
                _ => 0,
            };
            let delta = CheckpointDelta {
                phase: if last { "done" } else { "reconcile" },
                next_url: page.next.as_ref().map(Url::as_str),
                pages: 1,
                deleted: i64::try_from(deleted).unwrap_or(i64::MAX),
                ..Default::default()
            };
            self.commit_page(tx, run.spec, run.waits, resource, &delta)
                .await?;
            self.metrics.page_stored(resource, 0, delta.deleted, 0);
            self.check_stop(run).await?;
            match page.next {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(())
    }

    /// A page's transaction, committed without waiting for its WAL flush (see the module
    /// documentation for why that loses nothing).
    async fn begin_page(&self) -> Result<Transaction<'static, Postgres>, Stop> {
        // One round trip: both statements go as one simple query.
        Ok(self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?)
    }

    /// Commits a page: its records (already in `tx`), the checkpoint, the waits, and — on
    /// the resource's last page — the connection's new high-water mark: Clio's time when
    /// the listing began (so an edit to a page already read is picked up next time), or
    /// without a `Date` from Clio the newest `updated_at` seen.
    async fn commit_page(
        &self,
        mut tx: Transaction<'_, Postgres>,
        spec: &JobSpec,
        waits: &Waits,
        resource: Resource,
        delta: &CheckpointDelta<'_>,
    ) -> Result<(), Stop> {
        checkpoints::save_checkpoint(&mut tx, spec.job_id, resource, delta).await?;
        let waited = waits.0.swap(0, Ordering::Relaxed);
        if waited > 0 {
            sqlx::query(
                "UPDATE jobs SET rate_limit_wait_ms = rate_limit_wait_ms + $2 WHERE job_id = $1",
            )
            .bind(spec.job_id)
            .bind(i64::try_from(waited).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        if delta.phase == "done" {
            let mark = checkpoints::finished_listing_mark(&mut *tx, spec.job_id, resource).await?;
            if let Some(mark) = mark
                && spec.filters.is_empty()
            {
                checkpoints::advance_high_water(
                    &mut tx,
                    &spec.connection_id,
                    resource,
                    mark,
                    spec.job_id,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
