//! WatchJob's stream: the job as it is, then a status, page or rate-limit-wait update for
//! every change, with records per second and an ETA, until the job ends or the client
//! leaves. The job may run on another replica, so the stream reads the database.

use std::time::Duration;

use chrono::Utc;
use futures_util::Stream;
use proto::imports::v1 as pb;
use proto::time::timestamp;
use tokio::sync::mpsc::Sender;
use tonic::Status;
use uuid::Uuid;

use super::Api;
use crate::job::checkpoints;
use crate::job::store::{self, JobStatus};

/// How often WatchJob looks at the job (it may run on another replica).
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// WatchJob's stream: the job now, then every change until it ends.
pub(super) fn job_stream(
    api: Api,
    job_id: Uuid,
    first: pb::Job,
    waited_before_ms: i64,
) -> impl Stream<Item = Result<pb::JobProgress, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(watch(api, job_id, first, waited_before_ms, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Sends `first`, then the updates of every change of the job, until it ends, it is gone,
/// the client leaves or the service shuts down.
async fn watch(
    api: Api,
    job_id: Uuid,
    first: pb::Job,
    waited_before_ms: i64,
    tx: Sender<Result<pb::JobProgress, Status>>,
) {
    let mut last_changed = None;
    let mut last_wait_ms = waited_before_ms;
    let first_fetched: u64 = first.progress.iter().map(|p| p.records_fetched).sum();
    let started = tokio::time::Instant::now();
    let mut job = first;
    if tx
        .send(Ok(progress(
            pb::job_progress::Kind::Status,
            job.clone(),
            0,
            0.0,
            0,
        )))
        .await
        .is_err()
    {
        return;
    }
    loop {
        if JobStatus::from_wire(job.status).is_some_and(JobStatus::is_final) {
            return;
        }
        if !wait_for_next_poll(&api, &tx, job_id).await {
            return;
        }
        let row = match store::get(&api.pool, job_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "watch cannot read job");
                continue;
            }
        };
        if last_changed == Some(row.changed_at) {
            continue;
        }
        last_changed = Some(row.changed_at);
        let Ok(resources) = checkpoints::resource_rows(&api.pool, job_id).await else {
            continue;
        };
        let status_changed = row.status().to_wire() as i32 != job.status;
        let before = std::mem::replace(&mut job, store::to_wire(&row, &resources));
        let fetched: u64 = job.progress.iter().map(|p| p.records_fetched).sum();
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        let rate = (fetched.saturating_sub(first_fetched)) as f64 / elapsed;
        let eta = eta_seconds(&resources, rate);
        let mut waited = None;
        if row.rate_limit_wait_ms > last_wait_ms {
            waited = Some(u64::try_from(row.rate_limit_wait_ms - last_wait_ms).unwrap_or(0));
            last_wait_ms = row.rate_limit_wait_ms;
        }
        for update in updates(&before, &job, waited, status_changed, rate, eta) {
            if tx.send(Ok(update)).await.is_err() {
                return;
            }
        }
    }
}

/// Waits one watch interval; false when the watch must end instead (shutdown, or the
/// client left).
async fn wait_for_next_poll(
    api: &Api,
    tx: &Sender<Result<pb::JobProgress, Status>>,
    job_id: Uuid,
) -> bool {
    tokio::select! {
        () = api.shutdown.cancelled() => false,
        // The client left: stop polling now, not at the next update that fails
        // to send (a stalled job has none).
        () = tx.closed() => {
            tracing::debug!(%job_id, "watch ended: the client left");
            false
        }
        () = tokio::time::sleep(WATCH_INTERVAL) => true,
    }
}

/// The updates of one change from `before` to `job`: a rate-limit wait (`waited` ms, if
/// any), the pages, the status.
fn updates(
    before: &pb::Job,
    job: &pb::Job,
    waited: Option<u64>,
    status_changed: bool,
    rate: f64,
    eta: u64,
) -> Vec<pb::JobProgress> {
    let mut updates = Vec::with_capacity(3);
    if let Some(waited) = waited {
        let kind = pb::job_progress::Kind::RateLimitWait;
        updates.push(progress(kind, job.clone(), waited, rate, eta));
    }
    // The pages committed since the last poll, one update per resource that moved;
    // a status change (which may come in the same poll, e.g. the last page and
    // completion) is its own update.
    for now in &job.progress {
        let was = before
            .progress
            .iter()
            .find(|p| p.resource == now.resource)
            .map_or(0, |p| p.records_fetched);
        if now.records_fetched > was {
            let kind = pb::job_progress::Kind::Page;
            let mut update = progress(kind, job.clone(), 0, rate, eta);
            update.resource.clone_from(&now.resource);
            update.page_records = u32::try_from(now.records_fetched - was).unwrap_or(u32::MAX);
            updates.push(update);
        }
    }
    if status_changed || updates.is_empty() {
        let kind = pb::job_progress::Kind::Status;
        updates.push(progress(kind, job.clone(), 0, rate, eta));
    }
    updates
}

/// Seconds until the records still to fetch are fetched at `rate` (records/s), rounded
/// up; 0 (unknown) unless every resource still fetching has an expected total.
fn eta_seconds(resources: &[checkpoints::ResourceRow], rate: f64) -> u64 {
    let mut remaining = 0i64;
    for resource in resources.iter().filter(|r| r.phase == "fetch") {
        let Some(total) = resource.records_total else {
            return 0;
        };
        remaining += (total - resource.records_fetched).max(0);
    }
    if remaining == 0 || rate <= 0.0 {
        return 0;
    }
    (remaining as f64 / rate).ceil() as u64
}

fn progress(
    kind: pb::job_progress::Kind,
    job: pb::Job,
    wait_ms: u64,
    rate: f64,
    eta: u64,
) -> pb::JobProgress {
    pb::JobProgress {
        kind: kind as i32,
        job: Some(job),
        resource: String::new(),
        page_records: 0,
        wait_ms,
        eta_seconds: eta,
        records_per_second: rate,
        at: Some(timestamp(Utc::now())),
    }
}
