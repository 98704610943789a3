//! The witness: every signed checkpoint, appended to a JSON-lines file outside Postgres
//! (`checkpoints.witness_file`), so the chain heads leave the database.
//!
//! A checkpoint's signature proves the service signed a head, but the checkpoint rows live
//! in the database: someone with superuser rights can rewrite events, recompute the chain,
//! delete the checkpoints after the edit and let the service sign the rewritten head, and
//! the database then verifies. The witness still holds the checkpoints as they were signed,
//! and `audit-svc verify --witness FILE` finds the first one whose head is no longer the
//! chain's (`chain::ChainVerifier::with_witness`).
//!
//! How checkpoints get there: appends and the periodic checkpoint task notify
//! `append::NOTIFY_CHANNEL` with the tenant when they commit; the witness task then copies
//! that tenant's checkpoints after the last one it wrote (a committed row, so the file never
//! holds a head the database rolled back). At start-up, and every checkpoint interval in
//! case a notification was lost, it copies every tenant's. So a checkpoint reaches the file
//! milliseconds after it commits; one signed while the service was down (or stopping) is
//! copied at the next start, from the database as it is then.
//!
//! The file has the export's checkpoint lines, one per line, appended and synced; several
//! replicas each keep their own file (copies of the same checkpoints). A torn last line
//! (a crash mid-write) is cut off when the file is opened again.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use service_runtime::CancellationToken;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, broadcast};

use crate::chain::Checkpoint;
use crate::error::AuditError;
use crate::export::{checkpoint_line, parse_checkpoint_line};

/// Why a witness file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WitnessFileError {
    #[error("witness file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("witness file {path}, line {line}: {problem}")]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Every checkpoint in a witness file, in file order.
pub fn read_witness(path: &Path) -> Result<Vec<Checkpoint>, WitnessFileError> {
    let io = |source| WitnessFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut checkpoints = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let checkpoint = parse_checkpoint_line(&line).map_err(|e| WitnessFileError::Malformed {
            path: path.to_owned(),
            line: n + 1,
            problem: e.to_string(),
        })?;
        checkpoints.push(checkpoint);
    }
    Ok(checkpoints)
}

/// Opens `path` for appending (creating it), cutting off a torn last line; returns the
/// last witnessed sequence of each tenant.
fn open_for_append(path: &Path) -> Result<(std::fs::File, HashMap<String, u64>), WitnessFileError> {
    let io = |source| WitnessFileError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    let mut last = HashMap::new();
    let mut complete: u64 = 0;
    let mut reader = BufReader::new(&mut file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io)?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            tracing::warn!(
                path = %path.display(),
                line = number,
                "the witness file ends in a torn line (a crash mid-write); cutting it off"
            );
            break;
        }
        complete += read as u64;
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let checkpoint = parse_checkpoint_line(&text).map_err(|e| WitnessFileError::Malformed {
            path: path.to_owned(),
            line: number,
            problem: e.to_string(),
        })?;
        let seen = last.entry(checkpoint.tenant).or_insert(0);
        *seen = (*seen).max(checkpoint.sequence);
    }
    drop(reader);
    if file.seek(SeekFrom::End(0)).map_err(io)? != complete {
        file.set_len(complete).map_err(io)?;
    }
    Ok((file, last))
}

/// The witness file of a running service.
pub struct Witness {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: tokio::fs::File,
    /// Per tenant, the last sequence written to the file.
    last: HashMap<String, u64>,
}

type CheckpointRow = (String, i64, String, DateTime<Utc>, String, String);

impl Witness {
    /// Opens (or creates) the file and learns which checkpoints it already holds.
    pub async fn open(path: PathBuf) -> Result<Witness, WitnessFileError> {
        let opening = path.clone();
        let opened = tokio::task::spawn_blocking(move || open_for_append(&opening))
            .await
            .map_err(|e| WitnessFileError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let (file, last) = opened?;
        Ok(Witness {
            path,
            state: Mutex::new(State {
                file: tokio::fs::File::from_std(file),
                last,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies `tenant`'s checkpoints signed after the last one witnessed; how many.
    pub async fn copy_tenant(&self, pool: &PgPool, tenant: &str) -> Result<usize, AuditError> {
        let mut state = self.state.lock().await;
        let after = state.last.get(tenant).copied().unwrap_or(0);
        let rows: Vec<CheckpointRow> = sqlx::query_as(
            "SELECT tenant, sequence, head_hash, signed_at, key_id, signature FROM checkpoints \
             WHERE tenant = $1 AND sequence > $2 ORDER BY sequence",
        )
        .bind(tenant)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        self.write(&mut state, rows).await
    }

    /// Copies every tenant's checkpoints signed after the last one witnessed; how many.
    pub async fn copy_all(&self, pool: &PgPool) -> Result<usize, AuditError> {
        let mut state = self.state.lock().await;
        let (tenants, lasts): (Vec<String>, Vec<i64>) = state
            .last
            .iter()
            .map(|(t, s)| (t.clone(), i64::try_from(*s).unwrap_or(i64::MAX)))
            .unzip();
        let rows: Vec<CheckpointRow> = sqlx::query_as(
            "SELECT c.tenant, c.sequence, c.head_hash, c.signed_at, c.key_id, c.signature \
             FROM checkpoints AS c \
             LEFT JOIN unnest($1::text[], $2::bigint[]) AS w(tenant, last) USING (tenant) \
             WHERE c.sequence > coalesce(w.last, 0) ORDER BY c.tenant, c.sequence",
        )
        .bind(tenants)
        .bind(lasts)
        .fetch_all(pool)
        .await?;
        self.write(&mut state, rows).await
    }

    /// Appends `rows` and syncs the file; moves the tenants' last sequences only then, so
    /// a failed write is retried (a line written twice is harmless: same checkpoint).
    async fn write(
        &self,
        state: &mut State,
        rows: Vec<CheckpointRow>,
    ) -> Result<usize, AuditError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut out = Vec::with_capacity(rows.len() * 320);
        let mut moved: HashMap<String, u64> = HashMap::new();
        for (tenant, sequence, head_hash, signed_at, key_id, signature) in rows {
            let sequence = u64::try_from(sequence).unwrap_or(0);
            let checkpoint = Checkpoint {
                tenant,
                sequence,
                head_hash,
                signed_at,
                key_id,
                signature,
            };
            checkpoint_line(&checkpoint, &mut out);
            moved.insert(checkpoint.tenant, sequence);
        }
        let failed = |e: std::io::Error| {
            AuditError::Internal(format!("witness file {}: {e}", self.path.display()))
        };
        state.file.write_all(&out).await.map_err(failed)?;
        state.file.flush().await.map_err(failed)?;
        state.file.sync_data().await.map_err(failed)?;
        let written = moved.len();
        for (tenant, sequence) in moved {
            let last = state.last.entry(tenant).or_insert(0);
            *last = (*last).max(sequence);
        }
        Ok(written)
    }
}

/// The witness task: copies checkpoints when appends or checkpoint rounds commit
/// (`notifications`, the tenants `watch::Notifier` hears about) and every `interval`;
/// runs until `shutdown`. A failed copy is logged and retried at the next wake-up.
pub async fn run(
    witness: Arc<Witness>,
    pool: PgPool,
    mut notifications: broadcast::Receiver<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let report = |outcome: Result<usize, AuditError>| match outcome {
        Ok(0) => {}
        Ok(copied) => tracing::debug!(copied, "checkpoints witnessed"),
        Err(error) => tracing::error!(
            error = %error,
            path = %witness.path().display(),
            "cannot copy checkpoints to the witness file; will retry"
        ),
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listening = true;
    loop {
        // The first tick is immediate: catch up with everything signed while stopped.
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => report(witness.copy_all(&pool).await),
            received = notifications.recv(), if listening => match received {
                Ok(tenant) => report(witness.copy_tenant(&pool, &tenant).await),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    report(witness.copy_all(&pool).await);
                }
                Err(broadcast::error::RecvError::Closed) => listening = false,
            },
        }
    }
}
