//! Rotating the data key: new secrets are sealed under the new key at once, existing ones
//! are re-encrypted in the background in small batches (row locks, skipping rows someone
//! else holds), and reads keep working throughout because any configured key opens its
//! own ciphertexts.
//!
//! The active key id lives in the database so every replica converges on it (each checks
//! periodically); the configured `active_key_id` applies until the first rotation.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use proto::common::v1::{EventKind, EventRefs, subject};
use service_runtime::Caller;
use service_runtime::metrics::Metrics;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit_events::{EventBuilder, service_actor, subject_of, system_actor};
use crate::context::Context;
use crate::error::AuthError;
use crate::store;
use crate::store::encryption_key_state::Rotation;
use crate::store::sealed_columns::{self, SealedColumn};
use crate::store::undecryptable_secrets::Undecryptable;
use crate::token_vault::{TokenVault, VaultError};

/// Rows re-encrypted per transaction.
const BATCH: i64 = 100;
/// What a rotation reports to `/metrics`.
#[derive(Clone, Default)]
pub struct RotationMetrics {
    /// Stored secrets found undecryptable and set aside.
    pub undecryptable: Counter,
}

impl RotationMetrics {
    pub fn registered(metrics: &Metrics) -> RotationMetrics {
        let rotation = RotationMetrics::default();
        metrics.register(
            "key_rotation_undecryptable_secrets",
            "Stored secrets a key rotation could not decrypt and set aside (see undecryptable_secrets)",
            rotation.undecryptable.clone(),
        );
        rotation
    }
}

/// How often a replica picks up another replica's rotation and re-encrypts stragglers.
const SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// At start-up: refuses to run if a stored secret is under a key that is not configured,
/// and adopts the rotated-to key recorded in the database.
pub async fn prepare(pool: &PgPool, vault: &TokenVault) -> anyhow::Result<()> {
    for column in sealed_columns::ALL {
        let ids = sealed_columns::key_ids(pool, column).await?;
        if let Some(missing) = ids.iter().find(|id| !vault.has_key(id)) {
            anyhow::bail!(
                "keys: secrets in {}.{} are encrypted under key {missing:?}, which is not configured",
                column.table,
                column.name
            );
        }
    }
    sync_active(pool, vault).await?;
    Ok(())
}

/// Adopts the active key recorded by the last rotation (any replica's).
async fn sync_active(pool: &PgPool, vault: &TokenVault) -> Result<(), AuthError> {
    let recorded = store::encryption_key_state::active_key_id(pool).await?;
    if let Some(id) = recorded
        && id != vault.active_key_id()
    {
        if vault.has_key(&id) {
            vault.set_active(&id)?;
            tracing::info!(key_id = %id, "adopted the rotated encryption key");
        } else {
            tracing::error!(key_id = %id, "the rotated-to encryption key is not configured here");
        }
    }
    Ok(())
}

/// Secrets not yet under the active key, leaving out those set aside as undecryptable.
pub async fn pending(pool: &PgPool, active: &str) -> Result<u64, AuthError> {
    let mut total: i64 = 0;
    for column in sealed_columns::ALL {
        total += sealed_columns::count_not_under(pool, column, active).await?;
    }
    Ok(u64::try_from(total).unwrap_or(0))
}

#[tracing::instrument(skip_all, fields(new_key_id = %new_key_id, actor = %caller.name))]
pub async fn rotate(
    ctx: &Context,
    caller: &Caller,
    new_key_id: &str,
) -> Result<(String, u64), AuthError> {
    if new_key_id.trim().is_empty() {
        return Err(AuthError::invalid("new_key_id", "must not be empty"));
    }
    if !ctx.vault.has_key(new_key_id) {
        return Err(AuthError::invalid(
            "new_key_id",
            "not one of the configured keys",
        ));
    }
    let now = ctx.now();
    let previous = ctx.vault.active_key_id();
    let mut tx = ctx.pool.begin().await?;
    let rotation = Rotation {
        active_key_id: new_key_id,
        rotated_by: &caller.name,
        rotated_at: now,
    };
    store::encryption_key_state::record_rotation(&mut *tx, &rotation).await?;
    let event = EventBuilder::new(
        EventKind::EncryptionKeyRotated,
        &ctx.config.audit.platform_tenant,
        service_actor(&caller.name),
        subject_of(subject::Kind::EncryptionKey, new_key_id),
        now,
    )
    .refs(EventRefs::default())
    .payload(serde_json::json!({ "previous_key_id": previous, "new_key_id": new_key_id }))
    .build();
    audit_outbox::enqueue(&mut tx, event).await?;
    tx.commit().await?;
    ctx.vault.set_active(new_key_id)?;
    ctx.events_committed();
    let pending = pending(&ctx.pool, new_key_id).await?;
    let background = ctx.clone();
    tokio::spawn(async move {
        match reencrypt_all(&background).await {
            Ok(count) => tracing::info!(count, "re-encryption finished"),
            Err(error) => tracing::warn!(%error, "re-encryption stopped; the next sync resumes it"),
        }
    });
    Ok((new_key_id.to_owned(), pending))
}

/// Re-encrypts every secret not under the active key. Rows locked by someone else are
/// skipped and retried a few times, then left for the next sync. Secrets that do not
/// decrypt are set aside and reported (see [`set_aside`]); the rest still rotate.
pub async fn reencrypt_all(ctx: &Context) -> Result<u64, AuthError> {
    let mut total = 0;
    for round in 0..20 {
        let mut skipped_any = false;
        for column in sealed_columns::ALL {
            loop {
                let batch = reencrypt_batch(ctx, column).await?;
                total += batch.done;
                if batch.done == 0 && batch.set_aside == 0 {
                    skipped_any |= batch.remaining_locked;
                    break;
                }
            }
        }
        if !skipped_any {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50 * (round + 1))).await;
    }
    Ok(total)
}

/// What one batch did.
struct Batch {
    /// Re-encrypted under the active key.
    done: u64,
    /// Found undecryptable and set aside.
    set_aside: u64,
    /// Rows remain that were skipped because someone else held them.
    remaining_locked: bool,
}

/// One batch of one column, in one transaction.
async fn reencrypt_batch(ctx: &Context, column: &SealedColumn) -> Result<Batch, AuthError> {
    let active = ctx.vault.active_key_id();
    let mut tx = ctx.pool.begin().await?;
    let cells = sealed_columns::lock_not_under(&mut *tx, column, &active, BATCH).await?;
    if cells.is_empty() {
        tx.commit().await?;
        let remaining = sealed_columns::count_not_under(&ctx.pool, column, &active).await? > 0;
        return Ok(Batch {
            done: 0,
            set_aside: 0,
            remaining_locked: remaining,
        });
    }
    let mut done = 0;
    let mut undecryptable = Vec::new();
    for cell in cells {
        match ctx
            .vault
            .reseal(&cell.ciphertext, &column.binding(cell.row_id))
        {
            Ok(Some(sealed)) => {
                sealed_columns::write(&mut *tx, column, cell.row_id, &sealed).await?;
                done += 1;
            }
            Ok(None) => {}
            Err(VaultError::Encrypt) => return Err(VaultError::Encrypt.into()),
            Err(
                problem @ (VaultError::Undecryptable
                | VaultError::Malformed
                | VaultError::UnknownKey(_)),
            ) => undecryptable.push((cell.row_id, cell.key_id, problem)),
        }
    }
    let set_aside = set_aside(ctx, &mut tx, column, &active, undecryptable).await?;
    tx.commit().await?;
    if set_aside > 0 {
        ctx.events_committed();
    }
    Ok(Batch {
        done,
        set_aside,
        remaining_locked: false,
    })
}

/// Sets aside secrets that do not decrypt, so the rotation finishes the rest: each is
/// recorded in `undecryptable_secrets` (which later batches skip), counted in the
/// `key_rotation_undecryptable_secrets` metric and listed in an audit event (kind
/// ENCRYPTION_KEY_ROTATED, `outcome` "undecryptable_secrets_skipped"). An operator
/// decides what to do with them: a connection whose token is lost needs reconnecting.
async fn set_aside(
    ctx: &Context,
    tx: &mut Transaction<'_, Postgres>,
    column: &SealedColumn,
    active: &str,
    found: Vec<(Uuid, String, VaultError)>,
) -> Result<u64, AuthError> {
    if found.is_empty() {
        return Ok(0);
    }
    let now = ctx.now();
    let mut listed = Vec::new();
    for (id, key_id, problem) in &found {
        tracing::error!(
            table = column.table,
            column = column.name,
            row_id = %id,
            key_id = %key_id,
            %problem,
            "a stored secret does not decrypt; key rotation skips it"
        );
        let found = Undecryptable {
            column,
            row_id: *id,
            key_id,
            problem: problem.to_string(),
            found_at: now,
        };
        store::undecryptable_secrets::insert(&mut **tx, &found).await?;
        listed.push(serde_json::json!({
            "table": column.table,
            "column": column.name,
            "row_id": id.to_string(),
            "key_id": key_id,
            "problem": problem.to_string(),
        }));
    }
    let event = EventBuilder::new(
        EventKind::EncryptionKeyRotated,
        &ctx.config.audit.platform_tenant,
        system_actor(),
        subject_of(subject::Kind::EncryptionKey, active),
        now,
    )
    .refs(EventRefs::default())
    .reason("stored secrets that do not decrypt were skipped by the re-encryption")
    .payload(serde_json::json!({
        "outcome": "undecryptable_secrets_skipped",
        "new_key_id": active,
        "skipped": listed,
    }))
    .build();
    audit_outbox::enqueue(tx, event).await?;
    let count = found.len() as u64;
    ctx.rotation.undecryptable.inc_by(count);
    Ok(count)
}

/// Follows other replicas' rotations and finishes interrupted re-encryptions.
pub async fn run_sync(ctx: Context, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SYNC_INTERVAL) => {}
        }
        let synced = async {
            sync_active(&ctx.pool, &ctx.vault).await?;
            if pending(&ctx.pool, &ctx.vault.active_key_id()).await? > 0 {
                reencrypt_all(&ctx).await?;
            }
            Ok::<(), AuthError>(())
        }
        .await;
        if let Err(error) = synced {
            tracing::warn!(%error, "encryption key sync failed");
        }
    }
}
