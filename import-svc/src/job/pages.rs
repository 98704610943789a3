//! The page loops of a job: the fetch phase (records, stored page by page with their
//! checkpoint) and the reconcile phase (ids, marked seen).
//!
//! Speed without giving up a guarantee:
//! - **Pipelined.** While page N is written, page N+1 is already on its way from Clio (its
//!   URL is in page N). Clio's wait and Postgres's work overlap instead of adding up. The
//!   checkpoint still moves one committed page at a time, so a crash resumes exactly where
//!   it did before; a page fetched ahead and never written is simply fetched again.
//! - **Up to three pages written at once** ([`PAGES_IN_FLIGHT`]), each on its own
//!   connection, committing in listing order ([`Turn`]). Pages that share a record, and
//!   the last page (its sweep must see every page), are written alone. Beside a job's
//!   oldest write, a page needs a free write slot ([`WriteSlots`]) or waits its turn. The
//!   next page is fetched while the writes run, so Clio's answer never waits for them; it
//!   waits in memory (one page, no connection) for the oldest write to finish.
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

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clio_api::Page;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use scope_catalog::Resource;
use sqlx::{Postgres, Transaction};
use tokio::sync::oneshot;
use url::Url;

use super::checkpoints::{self, CheckpointDelta, ResourceRow};
use super::page_records;
use super::runner::{Outcome, Run, Runner, Stop, Waits, len_i64};
use super::spec::{JobSpec, Mode};
use super::write_slots::{ExtraSlot, WriteSlots};
use crate::records::{self, ClioId, Upserted};

/// The most often a running job publishes a progress event.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Pages of one listing written at once, each in its own transaction on its own
/// connection. Postgres spends most of a page's time on the upsert (index and WAL work), so
/// a second page's upsert can use a second core while the first commits.
///
/// Three against two (session 9): +9 % on 1,000,000 contacts (47,276 and 46,029 records/s
/// against 43,536 and 41,866, alternating runs). Each write holds a pooled connection until
/// its turn to commit, so with nothing else bounding them a few busy jobs could hold the
/// whole pool and starve `GetJob`: every write beside a job's oldest needs an extra slot
/// ([`WriteSlots`]) or waits its turn, so page writes never hold more than the pool less its
/// reserve (e2e `page_writes`). (Session 9's one "database unavailable" with three was, as
/// session 11 found, that benchmark's services asking Postgres for more connections than
/// its `max_connections`; the benchmark's pools are sized to fit now.)
const PAGES_IN_FLIGHT: usize = 3;

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

/// A page write's place in the listing. Pages commit in listing order, so the checkpoint
/// only ever moves over pages that are all stored, exactly as when they were written one
/// at a time; only their upserts overlap.
struct Turn {
    /// The previous page's commit; `None` once waited for, or for the first page.
    previous: Option<oneshot::Receiver<()>>,
    /// Wait for the previous page before writing anything, not only before committing.
    alone: bool,
    /// Told once this page is committed.
    committed: oneshot::Sender<()>,
}

impl Turn {
    fn first(committed: oneshot::Sender<()>) -> Turn {
        Turn {
            previous: None,
            alone: true,
            committed,
        }
    }

    fn after(previous: oneshot::Receiver<()>, alone: bool, committed: oneshot::Sender<()>) -> Turn {
        Turn {
            previous: Some(previous),
            alone,
            committed,
        }
    }

    /// Waits until this page may take a connection and write: at once if an extra write
    /// slot is free (returned, to hold until the commit), or once the previous page has
    /// committed, when this page is its job's oldest write and needs none. A page that
    /// must be written alone only waits.
    async fn start(&mut self, slots: &WriteSlots) -> Result<Option<ExtraSlot>, Stop> {
        if self.alone {
            self.wait().await?;
            return Ok(None);
        }
        let Some(previous) = self.previous.as_mut() else {
            return Ok(None);
        };
        tokio::select! {
            // A previous page already committed leaves the slot to another job.
            biased;
            committed = previous => {
                self.previous = None;
                committed.map_err(|_| Stop(Outcome::Interrupted))?;
                Ok(None)
            }
            Some(slot) = slots.extra() => Ok(Some(slot)),
        }
    }

    /// Waits for the previous page's commit. Should the previous page fail instead, its
    /// error is what the listing reports (writes are collected in order); this page's
    /// transaction is rolled back unused.
    async fn wait(&mut self) -> Result<(), Stop> {
        if let Some(previous) = self.previous.take() {
            previous.await.map_err(|_| Stop(Outcome::Interrupted))?;
        }
        Ok(())
    }
}

/// What writing a page did, for the listing's progress.
struct WrittenPage {
    upserted: Upserted,
    records: usize,
    last: bool,
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
        let first_page = row.next_url.is_none();
        let url = self.start_url(run, resource, row, since, false)?;
        let mut fetched = Some(self.fetch(run, &url).await?);
        let mut clio_started_at = match first_page {
            true => fetched.as_ref().and_then(|page| page.server_date),
            false => None,
        };
        let mut next_url = None;
        let mut writes = FuturesOrdered::new();
        // The newest page being written: its ids, and the signal of its commit.
        let mut newest: Option<(HashSet<ClioId>, oneshot::Receiver<()>)> = None;
        let mut progress = Progress { last: None };
        loop {
            let mut written = Vec::new();
            if let Some(page) = fetched.take() {
                // A page fetched while the job already writes PAGES_IN_FLIGHT pages waits
                // here, in memory and without a connection, for the oldest to finish.
                while writes.len() >= PAGES_IN_FLIGHT
                    && let Some(stored) = writes.next().await
                {
                    written.push(stored?);
                }
                next_url.clone_from(&page.next);
                let ids = records::page_ids(resource, &page.records);
                let (committed, signal) = oneshot::channel();
                let turn = match newest.take() {
                    None => Turn::first(committed),
                    Some((newest_ids, previous)) => {
                        // Two writes touching one row would each wait for the other (one
                        // on the row lock, one on its turn to commit), and the sweep after
                        // the last page must see every page: such pages wait their turn.
                        let alone = page.next.is_none() || !ids.is_disjoint(&newest_ids);
                        Turn::after(previous, alone, committed)
                    }
                };
                newest = Some((ids, signal));
                writes.push_back(self.write_page(&sink, page, clio_started_at.take(), turn));
            }
            if let Some(url) = next_url.take() {
                // The next page is fetched while the pages before it are written, however
                // many of them are.
                let fetch = self.fetch(run, &url);
                tokio::pin!(fetch);
                fetched = Some(loop {
                    tokio::select! {
                        page = &mut fetch => match page {
                            Ok(page) => break page,
                            Err(stop) => {
                                // The pages already fetched are still stored, as they
                                // would be one at a time; the fetch's failure is the
                                // listing's.
                                while writes.next().await.is_some() {}
                                return Err(stop);
                            }
                        },
                        Some(stored) = writes.next() => written.push(stored?),
                    }
                });
            } else if let Some(stored) = writes.next().await {
                written.push(stored?);
            } else {
                break;
            }
            let mut stop_check = run.stop.is_cancelled();
            for page in written {
                row.max_updated_at = row.max_updated_at.max(page.upserted.max_updated_at);
                if progress.due(page.last) {
                    self.events
                        .page(spec.job_id, resource, page.records, &self.pool)
                        .await;
                    // A cancel is looked for as often as progress is told (a read each).
                    stop_check = true;
                }
            }
            if stop_check {
                self.check_stop(run).await?;
            }
        }
        row.phase = phase_after_last.into();
        row.next_url = None;
        Ok(())
    }

    /// Stores one fetched page with its checkpoint in one transaction, committed in its
    /// turn (see [`Turn`]).
    async fn write_page(
        &self,
        sink: &PageSink<'_>,
        page: Page,
        clio_started_at: Option<DateTime<Utc>>,
        mut turn: Turn,
    ) -> Result<WrittenPage, Stop> {
        let last = page.next.is_none();
        let slot = turn.start(&self.write_slots).await?;
        let mut tx = page_records::begin(&self.pool).await?;
        let target = self.target(sink.spec, &sink.account_id, sink.resource);
        let stored =
            page_records::store_page(&self.pool, &mut tx, &target, &page.records, &page.skipped)
                .await?;
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
        turn.wait().await?;
        // Every page before this one is committed: it is now its job's oldest write, which
        // needs no extra slot, so the slot goes to a page waiting behind it.
        drop(slot);
        self.commit_page(tx, sink.spec, sink.waits, sink.resource, &delta)
            .await?;
        // The next page may commit now. (Nobody listening means the listing is over.)
        let _ = turn.committed.send(());
        self.metrics
            .page_stored(sink.resource, delta.written, delta.deleted, stored.skipped);
        Ok(WrittenPage {
            upserted,
            records: page.records.len(),
            last,
        })
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
            let mut tx = page_records::begin(&self.pool).await?;
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
