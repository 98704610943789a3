//! Signed checkpoints over chain heads: in the append that takes a tenant `every_events`
//! past its last checkpoint, and by a periodic task for heads that moved less than that.
//!
//! A checkpoint is what makes a rewritten history detectable: an attacker with database
//! access can recompute every hash after an edit, but cannot sign the new head. Because
//! such an attacker can also delete checkpoint rows and let the service sign the rewritten
//! head, every checkpoint is also copied outside the database when it commits (the
//! `witness` module).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use service_runtime::CancellationToken;
use service_runtime::clock::SharedClock;
use sqlx::{PgPool, Postgres, Transaction};

use crate::append::{NOTIFY_CHANNEL, lock_tenants, read_heads};
use crate::canonical::checkpoint_message;
use crate::error::AuditError;
use crate::signing::Signer;

/// Signs `(tenant, sequence, head_hash)` and stores the checkpoint; the caller holds the
/// tenant's append lock.
/// The tenant's newest signed checkpoint: its sequence and when it was signed.
pub async fn newest(
    pool: &PgPool,
    tenant: &str,
) -> Result<Option<(u64, DateTime<Utc>)>, AuditError> {
    let row: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT sequence, signed_at FROM checkpoints WHERE tenant = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(sequence, at)| (u64::try_from(sequence).unwrap_or(0), at)))
}

pub async fn sign_head(
    tx: &mut Transaction<'_, Postgres>,
    signer: &Signer,
    tenant: &str,
    sequence: u64,
    head_hash: &str,
    signed_at: DateTime<Utc>,
) -> Result<(), AuditError> {
    let signed_at = signed_at.trunc_subsecs(6);
    let message = checkpoint_message(tenant, sequence, head_hash, &signed_at, signer.key_id());
    let sequence = i64::try_from(sequence).map_err(|e| AuditError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO checkpoints (tenant, sequence, head_hash, signed_at, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(sequence)
    .bind(head_hash)
    .bind(signed_at)
    .bind(signer.key_id())
    .bind(signer.sign(&message))
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE chain_heads SET checkpointed_sequence = $2 WHERE tenant = $1")
        .bind(tenant)
        .bind(sequence)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Signs every head that moved since its last checkpoint. Returns how many it signed.
pub async fn checkpoint_moved_heads(
    pool: &PgPool,
    signer: &Signer,
    now: DateTime<Utc>,
) -> Result<usize, AuditError> {
    let moved: Vec<String> = sqlx::query_scalar(
        "SELECT tenant FROM chain_heads WHERE last_sequence > checkpointed_sequence ORDER BY tenant",
    )
    .fetch_all(pool)
    .await?;
    let mut signed = 0;
    for tenant in moved {
        let mut tx = pool.begin().await?;
        let tenants = [tenant];
        lock_tenants(&mut tx, &tenants).await?;
        let heads = read_heads(&mut tx, &tenants).await?;
        if let Some(head) = heads.get(&tenants[0])
            && head.last_sequence > head.checkpointed_sequence
        {
            sign_head(
                &mut tx,
                signer,
                &tenants[0],
                head.last_sequence,
                &head.last_hash,
                now,
            )
            .await?;
            // Wakes the witness task (and watchers, who find no new event) on commit, as
            // an append does.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(&tenants[0])
                .execute(&mut *tx)
                .await?;
            signed += 1;
        }
        tx.commit().await?;
    }
    Ok(signed)
}

/// The periodic checkpoint task: runs until `shutdown`; a failed round (database down) is
/// logged and retried on the next tick.
pub async fn run_periodic(
    pool: PgPool,
    signer: Arc<Signer>,
    clock: SharedClock,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match checkpoint_moved_heads(&pool, &signer, clock.now()).await {
            Ok(0) => {}
            Ok(signed) => tracing::debug!(signed, "signed chain heads"),
            Err(error) => tracing::warn!(error = %error, "periodic checkpoint failed; will retry"),
        }
    }
}
