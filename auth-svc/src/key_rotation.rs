//! Rotating the data key: new secrets are sealed under the new key at once, existing ones
//! are re-encrypted in the background in small batches (row locks, skipping rows someone
//! else holds), and reads keep working throughout because any configured key opens its
//! own ciphertexts.
//!
//! The active key id lives in the database so every replica converges on it (each checks
//! periodically); the configured `active_key_id` applies until the first rotation.

use std::time::Duration;

use proto::common::v1::{EventKind, EventRefs, subject};
use service_runtime::Caller;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit_events::{EventBuilder, service_actor, subject_of};
use crate::context::Context;
use crate::error::AuthError;
use crate::token_vault::{Binding, TokenVault};

/// A column holding ciphertexts, and where its key id and row id are.
struct SecretColumn {
    table: &'static str,
    /// The column name in the binding (`access_token`); the ciphertext is `<name>_ct`
    /// and its key id `<name>_key_id`.
    name: &'static str,
    id_column: &'static str,
}

const SECRET_COLUMNS: [SecretColumn; 6] = [
    SecretColumn {
        table: "app_registrations",
        name: "client_secret",
        id_column: "app_id",
    },
    SecretColumn {
        table: "connections",
        name: "access_token",
        id_column: "connection_id",
    },
    SecretColumn {
        table: "connections",
        name: "refresh_token",
        id_column: "connection_id",
    },
    SecretColumn {
        table: "pending_deauthorizations",
        name: "access_token",
        id_column: "connection_id",
    },
    SecretColumn {
        table: "pending_deauthorizations",
        name: "refresh_token",
        id_column: "connection_id",
    },
    SecretColumn {
        table: "authorization_states",
        name: "pkce_verifier",
        id_column: "id",
    },
];

/// Rows re-encrypted per transaction.
const BATCH: i64 = 100;
/// How often a replica picks up another replica's rotation and re-encrypts stragglers.
const SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// At start-up: refuses to run if a stored secret is under a key that is not configured,
/// and adopts the rotated-to key recorded in the database.
pub async fn prepare(pool: &PgPool, vault: &TokenVault) -> anyhow::Result<()> {
    for column in &SECRET_COLUMNS {
        let sql = format!(
            "SELECT DISTINCT {name}_key_id FROM {table} WHERE {name}_key_id IS NOT NULL",
            name = column.name,
            table = column.table
        );
        let ids: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(pool).await?;
        if let Some((missing,)) = ids.iter().find(|(id,)| !vault.has_key(id)) {
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
    let recorded: Option<(String,)> =
        sqlx::query_as("SELECT active_key_id FROM encryption_key_state")
            .fetch_optional(pool)
            .await?;
    if let Some((id,)) = recorded
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

/// Secrets not yet under the active key.
pub async fn pending(pool: &PgPool, active: &str) -> Result<u64, AuthError> {
    let mut total: i64 = 0;
    for column in &SECRET_COLUMNS {
        let sql = format!(
            "SELECT count(*) FROM {table} WHERE {name}_key_id IS NOT NULL AND {name}_key_id <> $1",
            name = column.name,
            table = column.table
        );
        let count: i64 = sqlx::query_scalar(&sql)
            .bind(active)
            .fetch_one(pool)
            .await?;
        total += count;
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
    sqlx::query(
        "INSERT INTO encryption_key_state (singleton, active_key_id, rotated_by, rotated_at) VALUES (true, $1, $2, $3) \
         ON CONFLICT (singleton) DO UPDATE SET active_key_id = $1, rotated_by = $2, rotated_at = $3",
    )
    .bind(new_key_id)
    .bind(&caller.name)
    .bind(now)
    .execute(&mut *tx)
    .await?;
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
/// skipped and retried a few times, then left for the next sync.
pub async fn reencrypt_all(ctx: &Context) -> Result<u64, AuthError> {
    let mut total = 0;
    for round in 0..20 {
        let mut skipped_any = false;
        for column in &SECRET_COLUMNS {
            loop {
                let (done, remaining_locked) = reencrypt_batch(ctx, column).await?;
                total += done;
                if done == 0 {
                    skipped_any |= remaining_locked;
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

/// One batch of one column: returns how many rows were re-encrypted, and whether rows
/// remain that were skipped because they were locked.
async fn reencrypt_batch(ctx: &Context, column: &SecretColumn) -> Result<(u64, bool), AuthError> {
    let active = ctx.vault.active_key_id();
    let mut tx = ctx.pool.begin().await?;
    let select = format!(
        "SELECT {id}, {name}_ct FROM {table} WHERE {name}_key_id IS NOT NULL AND {name}_key_id <> $1 \
         LIMIT $2 FOR UPDATE SKIP LOCKED",
        id = column.id_column,
        name = column.name,
        table = column.table
    );
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(&select)
        .bind(&active)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        let remaining = pending_in(&ctx.pool, column, &active).await? > 0;
        return Ok((0, remaining));
    }
    let update = format!(
        "UPDATE {table} SET {name}_ct = $2, {name}_key_id = $3 WHERE {id} = $1",
        id = column.id_column,
        name = column.name,
        table = column.table
    );
    let mut done = 0;
    for (id, ciphertext) in rows {
        let binding = Binding::new(column.table, column.name, id);
        if let Some(sealed) = ctx.vault.reseal(&ciphertext, &binding)? {
            sqlx::query(&update)
                .bind(id)
                .bind(&sealed.ciphertext)
                .bind(&sealed.key_id)
                .execute(&mut *tx)
                .await?;
            done += 1;
        }
    }
    tx.commit().await?;
    Ok((done, false))
}

async fn pending_in(pool: &PgPool, column: &SecretColumn, active: &str) -> Result<i64, AuthError> {
    let sql = format!(
        "SELECT count(*) FROM {table} WHERE {name}_key_id IS NOT NULL AND {name}_key_id <> $1",
        name = column.name,
        table = column.table
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(active)
        .fetch_one(pool)
        .await?)
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
