//! `Verify` over the database: read a tenant's events in sequence order and check them
//! with [`ChainVerifier`].
//!
//! The chain is checked in segments, several at once, each read on its own connection. A
//! signed checkpoint fixes the chain hash at its sequence, so the events after it can be
//! checked from that hash without waiting for those before it. Every segment but the last
//! ends at a checkpoint, and it holds when each of its events verified, the checkpoint at
//! its end included (signature and head hash). While every segment before it held, a
//! segment starts in exactly the state a single pass would be in there, so it finds what
//! that pass would. At the first segment that does not hold, the rest of the range is
//! checked in a single pass from that segment's start (the last segment, open-ended, is
//! checked that way from the outset): the first broken event and its reason (a reordered
//! event's predecessor found further on, the last stored event named before missing ones)
//! are what one pass over the whole range reports.
//!
//! Within a segment the events are copied from Postgres on the async runtime (a binary
//! `COPY`, [`crate::stored_chain`]) and hashed (canonical bytes and SHA-256, most of the
//! CPU time) on a blocking thread, straight from the copied bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::canonical::GENESIS_HASH;
use crate::chain::{ChainVerifier, Checkpoint, Verdict};
use crate::error::AuditError;
use crate::signing::TrustedKeys;
use crate::store::db_sequence;
use crate::stored_chain::{CopyTuples, RowHasher, copy_events};

/// Segments per worker, so that a segment finishing late leaves a core idle only briefly.
const SEGMENTS_PER_WORKER: u64 = 4;

/// At most this many segments are read at once.
const MAX_WORKERS: usize = 8;

/// A tenant's checkpoints in `[from, to]` (`to` 0: to the end).
pub async fn load_checkpoints(
    pool: &PgPool,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Checkpoint>, AuditError> {
    let rows: Vec<(
        String,
        i64,
        String,
        chrono::DateTime<chrono::Utc>,
        String,
        String,
    )> = sqlx::query_as(
        "SELECT tenant, sequence, head_hash, signed_at, key_id, signature FROM checkpoints \
             WHERE tenant = $1 AND sequence >= $2 AND ($3 = 0 OR sequence <= $3) ORDER BY sequence",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(tenant, sequence, head_hash, signed_at, key_id, signature)| Checkpoint {
                tenant,
                sequence: u64::try_from(sequence).unwrap_or(0),
                head_hash,
                signed_at,
                key_id,
                signature,
            },
        )
        .collect())
}

/// Verifies `tenant`'s events with sequence in `[from, to]` (0: unbounded).
pub async fn verify_tenant(
    pool: &PgPool,
    keys: &TrustedKeys,
    tenant: &str,
    from: u64,
    to: u64,
) -> Result<Verdict, AuditError> {
    verify_tenant_witnessed(pool, keys, tenant, from, to, Vec::new()).await
}

/// Verifies every tenant's whole chain against the witness (`audit-svc verify --witness`):
/// the database's own checkpoints, and the `witnessed` ones, copied outside the database
/// when they were signed. `tenants`: those to check; `None`, every tenant the database
/// has a chain head for or the witness names. In tenant order.
pub async fn verify_witnessed(
    pool: &PgPool,
    keys: &TrustedKeys,
    witnessed: Vec<Checkpoint>,
    tenants: Option<Vec<String>>,
) -> Result<Vec<(String, Verdict)>, AuditError> {
    let mut by_tenant: BTreeMap<String, Vec<Checkpoint>> = BTreeMap::new();
    for checkpoint in witnessed {
        by_tenant
            .entry(checkpoint.tenant.clone())
            .or_default()
            .push(checkpoint);
    }
    let tenants: BTreeSet<String> = match tenants {
        Some(tenants) => tenants.into_iter().collect(),
        None => {
            let stored: Vec<String> = sqlx::query_scalar("SELECT tenant FROM chain_heads")
                .fetch_all(pool)
                .await?;
            stored
                .into_iter()
                .chain(by_tenant.keys().cloned())
                .collect()
        }
    };
    let mut verdicts = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let witnessed = by_tenant.remove(&tenant).unwrap_or_default();
        let verdict = verify_tenant_witnessed(pool, keys, &tenant, 1, 0, witnessed).await?;
        verdicts.push((tenant, verdict));
    }
    Ok(verdicts)
}

/// [`verify_tenant`], also against checkpoints from a witness (`witnessed`, this
/// tenant's). Witnessed checkpoints beyond `to` are ignored; with `to` 0 one beyond the
/// last stored event means events are missing.
pub async fn verify_tenant_witnessed(
    pool: &PgPool,
    keys: &TrustedKeys,
    tenant: &str,
    from: u64,
    to: u64,
    witnessed: Vec<Checkpoint>,
) -> Result<Verdict, AuditError> {
    let from = from.max(1);
    if to != 0 && to < from {
        return Err(AuditError::invalid("to_sequence", "before from_sequence"));
    }
    let from_db = db_sequence("from_sequence", from)?;
    let to_db = db_sequence("to_sequence", to)?;
    let checkpoints = load_checkpoints(pool, tenant, from_db, to_db).await?;
    let prev_hash = if from == 1 {
        Some(GENESIS_HASH.to_owned())
    } else {
        sqlx::query_scalar("SELECT hash FROM events WHERE tenant = $1 AND sequence = $2")
            .bind(tenant)
            .bind(from_db - 1)
            .fetch_optional(pool)
            .await?
    };
    let head: Option<i64> =
        sqlx::query_scalar("SELECT last_sequence FROM chain_heads WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    let head = head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0);
    let expected_last = if to == 0 { head } else { to.min(head) };
    let witnessed: Vec<Checkpoint> = witnessed
        .into_iter()
        .filter(|c| c.tenant == tenant && (to == 0 || c.sequence <= to))
        .collect();

    let range = Range {
        pool,
        keys: Arc::new(keys.clone()),
        tenant,
        to,
        expected_last,
        checkpoints,
        witnessed,
    };
    let first = Start {
        sequence: from,
        prev_hash,
        after_event: None,
    };
    let workers = workers(pool);
    let segments = plan(&first, expected_last, &range.checkpoints, workers);

    // Checked in any order, taken in sequence order.
    let range = &range;
    let mut checked =
        futures_util::stream::iter(segments.clone().into_iter().enumerate())
            .map(|(index, segment)| async move {
                (index, range.check(segment.start, segment.end).await)
            })
            .buffer_unordered(workers);
    let mut waiting = BTreeMap::new();
    let mut totals = Totals::default();
    let mut after_event = None;
    for (index, segment) in segments.iter().enumerate() {
        let outcome = loop {
            if let Some(outcome) = waiting.remove(&index) {
                break outcome;
            }
            match checked.next().await {
                Some((done, outcome)) => {
                    waiting.insert(done, outcome);
                }
                None => {
                    return Err(AuditError::Internal(
                        "verify: a segment went missing".into(),
                    ));
                }
            }
        };
        let outcome: Checked = outcome?;
        let held = outcome.verdict.first_broken.is_none()
            && segment
                .end
                .is_none_or(|end| outcome.intact_through == Some(end));
        // The last segment was checked as a single pass from its start: its verdict is that
        // pass's, unless it lacked the event before it (known only now) to name.
        if segment.end.is_none() && (held || segment.start.after_event == after_event) {
            return Ok(totals.add(outcome.verdict));
        }
        if !held {
            // One pass from this segment's start, which every earlier segment vouches for.
            drop(checked);
            let start = Start {
                after_event,
                ..segment.start.clone()
            };
            let outcome = range.check(start, None).await?;
            return Ok(totals.add(outcome.verdict));
        }
        totals.count(&outcome.verdict);
        after_event = Some(outcome.last_event_id);
    }
    // The plan always ends with an open segment.
    Err(AuditError::Internal("verify: no final segment".into()))
}

/// How many segments are read at once: one per core, at most [`MAX_WORKERS`], and at most
/// a quarter of the pool's connections, so that other calls (a second `Verify` too) still
/// get theirs.
fn workers(pool: &PgPool) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let connections = usize::try_from(pool.options().get_max_connections() / 4).unwrap_or(1);
    cores.min(MAX_WORKERS).min(connections).max(1)
}

/// Where checking starts, and what a single pass would know there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Start {
    sequence: u64,
    /// The hash the event at `sequence` must link to; `None`: its own `prev_hash`.
    prev_hash: Option<String>,
    /// The event before `sequence`, once verified.
    after_event: Option<String>,
}

/// Sequences `start.sequence..=end`; `end` `None`: to the end of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    start: Start,
    end: Option<u64>,
}

/// Splits `first.sequence..=expected_last` and what follows into segments that end at
/// checkpoints, about `workers × SEGMENTS_PER_WORKER` of them. The last is open: it reads
/// whatever is stored after the last cut.
fn plan(
    first: &Start,
    expected_last: u64,
    checkpoints: &[Checkpoint],
    workers: usize,
) -> Vec<Segment> {
    let span = (expected_last + 1).saturating_sub(first.sequence);
    let pieces = u64::try_from(workers).unwrap_or(1) * SEGMENTS_PER_WORKER;
    let target = span.div_ceil(pieces).max(1);
    let mut segments = Vec::new();
    let mut start = first.clone();
    for checkpoint in checkpoints {
        let at = checkpoint.sequence;
        if at < start.sequence || at >= expected_last {
            continue;
        }
        if at + 1 - start.sequence >= target {
            let next = Start {
                sequence: at + 1,
                prev_hash: Some(checkpoint.head_hash.clone()),
                after_event: None,
            };
            segments.push(Segment {
                start: std::mem::replace(&mut start, next),
                end: Some(at),
            });
        }
    }
    segments.push(Segment { start, end: None });
    segments
}

/// What one verification reads and checks against.
struct Range<'a> {
    pool: &'a PgPool,
    keys: Arc<TrustedKeys>,
    tenant: &'a str,
    /// The requested end (0: none).
    to: u64,
    /// The last sequence the range should reach.
    expected_last: u64,
    checkpoints: Vec<Checkpoint>,
    witnessed: Vec<Checkpoint>,
}

/// A checked stretch of the chain.
struct Checked {
    verdict: Verdict,
    intact_through: Option<u64>,
    last_event_id: String,
}

impl Range<'_> {
    /// Checks from `start` through `end` (`None`: to the end of the range, with
    /// [`ChainVerifier::finish`]'s checks for a missing tail). A segment with an end stops at
    /// its first broken event; an open one reads on as long as the verdict can change.
    async fn check(&self, start: Start, end: Option<u64>) -> Result<Checked, AuditError> {
        let within =
            |sequence: u64| sequence >= start.sequence && end.is_none_or(|end| sequence <= end);
        let checkpoints: Vec<Checkpoint> = self
            .checkpoints
            .iter()
            .filter(|c| within(c.sequence))
            .cloned()
            .collect();
        let witnessed: Vec<Checkpoint> = self
            .witnessed
            .iter()
            .filter(|c| within(c.sequence))
            .cloned()
            .collect();
        let from = db_sequence("from_sequence", start.sequence)?;
        let to = db_sequence("to_sequence", end.unwrap_or(self.to))?;
        let expected_last = end.is_none().then_some(self.expected_last);
        let keys = Arc::clone(&self.keys);
        let (sender, receiver) = mpsc::channel(2);
        let checker = tokio::task::spawn_blocking(move || {
            let mut verifier =
                ChainVerifier::new(&keys, start.sequence, start.prev_hash, checkpoints)
                    .with_witness(witnessed, true);
            if let Some(event_id) = &start.after_event {
                verifier = verifier.after_event(event_id);
            }
            let stop_at_break = end.is_some();
            check_rows(&mut verifier, receiver, stop_at_break)?;
            Ok::<_, AuditError>(Checked {
                intact_through: verifier.intact_through(),
                last_event_id: verifier.last_event_id().to_owned(),
                verdict: verifier.finish(expected_last),
            })
        });
        let read = copy_events(self.pool, self.tenant, from, to, sender).await;
        let checked = checker
            .await
            .map_err(|e| AuditError::Internal(format!("verify worker: {e}")))?;
        // A read that failed ended the rows early: its error, not that verdict.
        read?;
        checked
    }
}

/// Feeds the copied events to `verifier` until they end or the verdict is settled
/// (`stop_at_break`: at the first broken event). Dropping the receiver tells the reader to
/// stop.
fn check_rows(
    verifier: &mut ChainVerifier<'_>,
    mut pieces: mpsc::Receiver<Vec<u8>>,
    stop_at_break: bool,
) -> Result<(), AuditError> {
    let mut tuples = CopyTuples::default();
    let mut hasher = RowHasher::default();
    while let Some(piece) = pieces.blocking_recv() {
        let flow = tuples.feed(&piece, |tuple| {
            verifier.push(hasher.hash(tuple)?.link());
            let settled = if stop_at_break {
                verifier.intact_through().is_none()
            } else {
                !verifier.wants_more()
            };
            Ok(if settled {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if flow.is_break() {
            return Ok(());
        }
    }
    // All of it came: it must end as copy data ends.
    tuples.finish()
}

/// Counts of the segments that held.
#[derive(Debug, Default)]
struct Totals {
    events: u64,
    checkpoints: u64,
    witnessed: u64,
}

impl Totals {
    fn count(&mut self, verdict: &Verdict) {
        self.events += verdict.events_checked;
        self.checkpoints += verdict.checkpoints_checked;
        self.witnessed += verdict.witnessed_checked;
    }

    /// The verdict of the whole range: these segments, then `last`.
    fn add(mut self, last: Verdict) -> Verdict {
        self.count(&last);
        Verdict {
            events_checked: self.events,
            checkpoints_checked: self.checkpoints,
            witnessed_checked: self.witnessed,
            ..last
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(sequence: u64) -> Checkpoint {
        Checkpoint {
            tenant: "t".into(),
            sequence,
            head_hash: format!("h{sequence}"),
            signed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            key_id: "k".into(),
            signature: String::new(),
        }
    }

    fn start(sequence: u64, prev_hash: Option<&str>) -> Start {
        Start {
            sequence,
            prev_hash: prev_hash.map(str::to_owned),
            after_event: None,
        }
    }

    /// `(first sequence, anchor, end)` of each segment.
    fn bounds(segments: &[Segment]) -> Vec<(u64, Option<String>, Option<u64>)> {
        segments
            .iter()
            .map(|s| (s.start.sequence, s.start.prev_hash.clone(), s.end))
            .collect()
    }

    #[test]
    fn segments_end_at_checkpoints_before_the_head_and_the_last_is_open() {
        let checkpoints: Vec<Checkpoint> = [10, 20, 30, 40].map(checkpoint).into();
        let first = start(1, Some(GENESIS_HASH));
        // 30 events, one worker: about 8 per segment, so every checkpoint before the head.
        assert_eq!(
            bounds(&plan(&first, 30, &checkpoints, 1)),
            [
                (1, Some(GENESIS_HASH.into()), Some(10)),
                (11, Some("h10".into()), Some(20)),
                (21, Some("h20".into()), None),
            ]
        );
        // Longer segments: a checkpoint is a cut only once a segment is long enough.
        assert_eq!(
            bounds(&plan(&first, 100, &checkpoints, 1)),
            [
                (1, Some(GENESIS_HASH.into()), Some(30)),
                (31, Some("h30".into()), None),
            ]
        );
        // No checkpoints, or an empty chain: one pass.
        assert_eq!(
            bounds(&plan(&first, 30, &[], 2)),
            [(1, Some(GENESIS_HASH.into()), None)]
        );
        assert_eq!(
            bounds(&plan(&first, 0, &checkpoints, 2)),
            [(1, Some(GENESIS_HASH.into()), None)]
        );
    }

    #[test]
    fn a_range_starts_on_its_own_anchor_and_ignores_earlier_checkpoints() {
        let checkpoints: Vec<Checkpoint> = [20, 30].map(checkpoint).into();
        assert_eq!(
            bounds(&plan(&start(15, None), 40, &checkpoints, 2)),
            [
                (15, None, Some(20)),
                (21, Some("h20".into()), Some(30)),
                (31, Some("h30".into()), None)
            ]
        );
        let from_a_checkpoint: Vec<Checkpoint> = [15, 30].map(checkpoint).into();
        assert_eq!(
            bounds(&plan(&start(16, Some("h15")), 40, &from_a_checkpoint, 2)),
            [
                (16, Some("h15".into()), Some(30)),
                (31, Some("h30".into()), None)
            ]
        );
    }
}
