//! `Verify` over the database: stream a tenant's events in sequence order and check them
//! with [`ChainVerifier`].
//!
//! Three stages, so every core works and memory stays flat for any chain length: one task
//! reads rows from Postgres in batches; the batches are decoded and hashed (canonical bytes
//! and SHA-256, the bulk of the CPU time) on blocking workers, several at once; and the
//! verifier takes the results back in sequence order and checks the links. An event's
//! content hash depends only on its own row, so the parallel stage changes no verdict.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt, TryStreamExt};
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::canonical::GENESIS_HASH;
use crate::chain::{ChainVerifier, Checkpoint, Link, Verdict};
use crate::error::AuditError;
use crate::signing::TrustedKeys;
use crate::store::{EVENT_COLUMNS, db_sequence, decode_event};

/// Rows travel from the reader to the workers in batches of this many.
const BATCH: usize = 1_024;

/// One event, decoded and hashed, ready for the verifier.
struct Prepared {
    sequence: u64,
    event_id: String,
    content_hash: String,
    prev_hash: String,
    hash: String,
}

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

    let (sender, receiver) = mpsc::channel::<Result<Vec<PgRow>, AuditError>>(4);
    let reader = tokio::spawn(read_rows(
        pool.clone(),
        tenant.to_owned(),
        from_db,
        to_db,
        sender,
    ));
    // One batch in hand per core, plus one waiting, keeps the workers busy; `buffered`
    // hands the batches back in the order they were read.
    let workers = std::thread::available_parallelism().map_or(2, usize::from) + 1;
    let mut prepared = ReceiverStream::new(receiver)
        .map(|rows| async move {
            tokio::task::spawn_blocking(move || prepare(rows?))
                .await
                .map_err(|e| AuditError::Internal(format!("verify worker: {e}")))?
        })
        .buffered(workers);
    let witnessed = witnessed
        .into_iter()
        .filter(|c| c.tenant == tenant && (to == 0 || c.sequence <= to));
    let mut verifier =
        ChainVerifier::new(keys, from, prev_hash, checkpoints).with_witness(witnessed, true);
    while let Some(batch) = prepared.try_next().await? {
        for event in &batch {
            verifier.push(Link {
                sequence: event.sequence,
                event_id: &event.event_id,
                content_hash: &event.content_hash,
                prev_hash: &event.prev_hash,
                hash: &event.hash,
            });
        }
        if !verifier.wants_more() {
            break;
        }
    }
    drop(prepared);
    // The reader ends on its own once the stream is gone.
    reader.abort();
    Ok(verifier.finish(Some(expected_last)))
}

/// Decodes a batch of rows and hashes each event's contents.
fn prepare(rows: Vec<PgRow>) -> Result<Vec<Prepared>, AuditError> {
    rows.iter()
        .map(|row| {
            let record = decode_event(row)?;
            Ok(Prepared {
                sequence: record.sequence,
                event_id: record.body.event_id.to_string(),
                content_hash: Link::content_hash_of(&record.prev_hash, &record.canonical_bytes()),
                prev_hash: record.prev_hash,
                hash: record.hash,
            })
        })
        .collect()
}

/// Streams the rows of `tenant` in `[from, to]` in sequence order, in batches.
async fn read_rows(
    pool: PgPool,
    tenant: String,
    from: i64,
    to: i64,
    sender: mpsc::Sender<Result<Vec<PgRow>, AuditError>>,
) {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND sequence >= $2 \
         AND ($3 = 0 OR sequence <= $3) ORDER BY sequence"
    );
    let mut rows = sqlx::query(&sql)
        .bind(&tenant)
        .bind(from)
        .bind(to)
        .fetch(&pool);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match rows.try_next().await {
            Ok(Some(row)) => batch.push(row),
            Ok(None) => break,
            Err(error) => {
                let _ = sender.send(Err(error.into())).await;
                return;
            }
        }
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if sender.send(Ok(full)).await.is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = sender.send(Ok(batch)).await;
    }
}
