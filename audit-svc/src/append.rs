//! Appending events: idempotency by event id, one hash chain per tenant, the compliance
//! projections and due checkpoints, all in one transaction.
//!
//! Concurrency: an append takes a transaction-scoped advisory lock per tenant it touches,
//! in tenant order (so two batches never deadlock), before it reads the chain head. Appends
//! to one tenant therefore commit in sequence order, and a reader only ever sees a prefix
//! of each chain — which is what lets `Watch` resume from a sequence without gaps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use service_runtime::clock::SharedClock;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::canonical::GENESIS_HASH;
use crate::checkpoint::sign_head;
use crate::error::AuditError;
use crate::event::{EventBody, EventRecord};
use crate::metrics::AuditMetrics;
use crate::signing::Signer;
use crate::store::{EVENT_COLUMNS, decode_event};

/// The Postgres channel appends notify (payload: the tenant).
pub const NOTIFY_CHANNEL: &str = "audit_events";

/// First key of the advisory locks that serialise a tenant's appends ("AUDT").
const LOCK_NAMESPACE: i32 = 0x4155_4454;

/// How often an append that lost a race on an event id (another tenant's batch inserted
/// it first) starts over before giving up.
const MAX_ATTEMPTS: usize = 3;

/// Appends events to the log.
#[derive(Clone)]
pub struct Appender {
    pub pool: PgPool,
    pub signer: Arc<Signer>,
    pub clock: SharedClock,
    /// Sign a tenant's head once it is this many events past its last checkpoint.
    pub checkpoint_every: u64,
    /// Appends and duplicates are counted here.
    pub metrics: AuditMetrics,
}

/// What an append stored or found.
#[derive(Debug)]
pub struct Appended {
    /// In request order.
    pub events: Vec<EventRecord>,
    /// How many were recorded before this call.
    pub duplicates: u32,
}

/// A tenant's chain head, as locked for an append.
#[derive(Debug, Clone)]
pub struct Head {
    pub last_sequence: u64,
    pub last_hash: String,
    pub checkpointed_sequence: u64,
}

/// Takes the append locks of these tenants (sorted, so lock order is global).
pub async fn lock_tenants(
    tx: &mut Transaction<'_, Postgres>,
    tenants: &[String],
) -> Result<(), AuditError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(t)) FROM unnest($2::text[]) AS t")
        .bind(LOCK_NAMESPACE)
        .bind(tenants)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The heads of these tenants; a tenant without events starts at the genesis hash.
pub async fn read_heads(
    tx: &mut Transaction<'_, Postgres>,
    tenants: &[String],
) -> Result<HashMap<String, Head>, AuditError> {
    let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT tenant, last_sequence, last_hash, checkpointed_sequence \
         FROM chain_heads WHERE tenant = ANY($1)",
    )
    .bind(tenants)
    .fetch_all(&mut **tx)
    .await?;
    let mut heads: HashMap<String, Head> = rows
        .into_iter()
        .map(|(tenant, last, hash, checkpointed)| {
            let head = Head {
                last_sequence: u64::try_from(last).unwrap_or(0),
                last_hash: hash,
                checkpointed_sequence: u64::try_from(checkpointed).unwrap_or(0),
            };
            (tenant, head)
        })
        .collect();
    for tenant in tenants {
        heads.entry(tenant.clone()).or_insert_with(|| Head {
            last_sequence: 0,
            last_hash: GENESIS_HASH.to_owned(),
            checkpointed_sequence: 0,
        });
    }
    Ok(heads)
}

impl Appender {
    /// Appends `bodies` (validated), returning the stored events in request order.
    pub async fn append(&self, bodies: &[EventBody]) -> Result<Appended, AuditError> {
        let mut attempt = 1;
        loop {
            match self.try_append(bodies).await {
                Err(AuditError::Database(error))
                    if attempt < MAX_ATTEMPTS && is_event_id_collision(&error) =>
                {
                    attempt += 1;
                }
                Err(AuditError::Database(error)) if is_event_id_collision(&error) => {
                    return Err(AuditError::Contended);
                }
                outcome => return outcome,
            }
        }
    }

    async fn try_append(&self, bodies: &[EventBody]) -> Result<Appended, AuditError> {
        let first_index = first_occurrences(bodies)?;
        let mut tenants: Vec<String> = bodies.iter().map(|b| b.tenant.clone()).collect();
        tenants.sort_unstable();
        tenants.dedup();

        let mut tx = self.pool.begin().await?;
        lock_tenants(&mut tx, &tenants).await?;

        let ids: Vec<Uuid> = first_index.keys().copied().collect();
        let existing = stored_events(&mut tx, &ids).await?;
        let duplicates = check_duplicates(bodies, &first_index, &existing)?;

        let recorded_at = self.clock.now().trunc_subsecs(6);
        let mut heads = read_heads(&mut tx, &tenants).await?;
        let fresh = chain_fresh(bodies, &first_index, &existing, &mut heads, recorded_at)?;

        if !fresh.is_empty() {
            insert_events(&mut tx, EVENTS_TABLE, &fresh).await?;
            self.advance_heads(&mut tx, &fresh, &heads, recorded_at)
                .await?;
        }
        tx.commit().await?;
        self.metrics.appended(&fresh, duplicates);

        let mut by_id: HashMap<Uuid, EventRecord> = existing;
        by_id.extend(fresh.into_iter().map(|r| (r.body.event_id, r)));
        let events = bodies
            .iter()
            .map(|b| {
                by_id
                    .get(&b.event_id)
                    .cloned()
                    .ok_or_else(|| AuditError::Internal("an appended event went missing".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Appended { events, duplicates })
    }

    /// Moves the heads of the tenants in `fresh`, projects their new events, signs heads
    /// that are due and wakes watchers (on commit).
    async fn advance_heads(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        fresh: &[EventRecord],
        heads: &HashMap<String, Head>,
        now: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        // Per tenant: the first new sequence.
        let mut first_new: BTreeMap<&str, u64> = BTreeMap::new();
        for record in fresh {
            first_new
                .entry(record.body.tenant.as_str())
                .or_insert(record.sequence);
        }
        for (tenant, from) in first_new {
            let head = heads
                .get(tenant)
                .ok_or_else(|| AuditError::Internal("no head for a locked tenant".into()))?;
            let last = i64::try_from(head.last_sequence)
                .map_err(|e| AuditError::Internal(e.to_string()))?;
            sqlx::query(
                "INSERT INTO chain_heads (tenant, last_sequence, last_hash, updated_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, \
                 last_hash = EXCLUDED.last_hash, updated_at = EXCLUDED.updated_at",
            )
            .bind(tenant)
            .bind(last)
            .bind(&head.last_hash)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query("SELECT audit_project($1, $2, $3)")
                .bind(tenant)
                .bind(i64::try_from(from).map_err(|e| AuditError::Internal(e.to_string()))?)
                .bind(last)
                .execute(&mut **tx)
                .await?;
            // How far the projections got, compared with the log at start-up to catch
            // events that reached it some other way (migration 0005).
            sqlx::query(
                "INSERT INTO projection_heads (tenant, sequence) VALUES ($1, $2) \
                 ON CONFLICT (tenant) DO UPDATE SET sequence = EXCLUDED.sequence",
            )
            .bind(tenant)
            .bind(last)
            .execute(&mut **tx)
            .await?;
            // Every `checkpoint_every` events since the last checkpoint, also inside a batch.
            let mut due = (head.checkpointed_sequence + self.checkpoint_every).max(from);
            while due <= head.last_sequence {
                let record = fresh
                    .iter()
                    .find(|r| r.sequence == due && r.body.tenant == tenant)
                    .ok_or_else(|| {
                        AuditError::Internal("a due checkpoint left the batch".into())
                    })?;
                sign_head(tx, &self.signer, tenant, due, &record.hash, now).await?;
                due += self.checkpoint_every;
            }
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(tenant)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// The index of the first occurrence of each event id in `bodies`; a repeat must be
/// identical to it.
fn first_occurrences(bodies: &[EventBody]) -> Result<HashMap<Uuid, usize>, AuditError> {
    let mut first_index: HashMap<Uuid, usize> = HashMap::new();
    for (i, body) in bodies.iter().enumerate() {
        if let Some(&first) = first_index.get(&body.event_id) {
            if bodies[first] != *body {
                return Err(AuditError::invalid(
                    format!("events[{i}].event_id"),
                    format!("repeats events[{first}].event_id with different content"),
                ));
            }
        } else {
            first_index.insert(body.event_id, i);
        }
    }
    Ok(first_index)
}

/// How many of the request's events are already stored; a stored one must be the same
/// fact.
fn check_duplicates(
    bodies: &[EventBody],
    first_index: &HashMap<Uuid, usize>,
    existing: &HashMap<Uuid, EventRecord>,
) -> Result<u32, AuditError> {
    let mut duplicates = 0u32;
    for (id, stored) in existing {
        let i = first_index[id];
        if !same_fact(&stored.body, &bodies[i]) {
            return Err(AuditError::Conflict {
                field: format!("events[{i}].event_id"),
                problem: format!(
                    "{id} is already recorded with different content (sequence {} of tenant {:?})",
                    stored.sequence, stored.body.tenant
                ),
            });
        }
        duplicates += 1;
    }
    Ok(duplicates)
}

/// Chains the events not yet stored (first occurrences only) onto their tenants' heads,
/// moving `heads` along.
fn chain_fresh(
    bodies: &[EventBody],
    first_index: &HashMap<Uuid, usize>,
    existing: &HashMap<Uuid, EventRecord>,
    heads: &mut HashMap<String, Head>,
    recorded_at: DateTime<Utc>,
) -> Result<Vec<EventRecord>, AuditError> {
    let mut fresh: Vec<EventRecord> = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if first_index[&body.event_id] != i || existing.contains_key(&body.event_id) {
            continue;
        }
        let head = heads
            .get_mut(&body.tenant)
            .ok_or_else(|| AuditError::Internal("no head for a locked tenant".into()))?;
        let mut record = EventRecord {
            body: body.clone(),
            sequence: head.last_sequence + 1,
            recorded_at,
            prev_hash: head.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record.expected_hash(&record.prev_hash);
        head.last_sequence = record.sequence;
        head.last_hash.clone_from(&record.hash);
        fresh.push(record);
    }
    Ok(fresh)
}

/// Whether a stored event and a new one are the same fact. An event stored before writers
/// were recorded has none, so its redelivery by a producer matches it whoever sends it.
fn same_fact(stored: &EventBody, new: &EventBody) -> bool {
    if stored.writer.is_empty() && !new.writer.is_empty() {
        let unwritten = EventBody {
            writer: String::new(),
            ..new.clone()
        };
        return *stored == unwritten;
    }
    stored == new
}

/// Stored events with these ids.
async fn stored_events(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, EventRecord>, AuditError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| decode_event(row).map(|r| (r.body.event_id, r)))
        .collect()
}

/// The event log's table.
pub const EVENTS_TABLE: &str = "events";

/// One INSERT for the whole batch (arrays unnested server-side) into `table`: the log, or
/// a table of the same shape (the throughput benchmark's plain-insert baseline).
pub async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    records: &[EventRecord],
) -> Result<(), AuditError> {
    let column = |f: fn(&EventRecord) -> String| records.iter().map(f).collect::<Vec<String>>();
    let sequences = records
        .iter()
        .map(|r| i64::try_from(r.sequence).map_err(|e| AuditError::Internal(e.to_string())))
        .collect::<Result<Vec<i64>, _>>()?;
    let ids: Vec<Uuid> = records.iter().map(|r| r.body.event_id).collect();
    let occurred: Vec<DateTime<Utc>> = records.iter().map(|r| r.body.occurred_at).collect();
    let recorded: Vec<DateTime<Utc>> = records.iter().map(|r| r.recorded_at).collect();
    sqlx::query(&format!(
        "INSERT INTO {table} (tenant, sequence, event_id, kind, actor_kind, actor_id, \
             subject_kind, subject_id, connection_id, app_id, principal, clio_user_id, \
             clio_account_id, job_id, region, scopes, risk_tier, reason, source, occurred_at, \
             recorded_at, payload, prev_hash, hash, writer) \
         SELECT t, s, id, k, ak, ai, sk, si, ci, ap, pr, cu, ca, j, rg, \
             string_to_array(sc, ','), rt, re, so, oa, ra, pl::jsonb, ph, h, w \
         FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
             $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
             $19::text[], $20::timestamptz[], $21::timestamptz[], $22::text[], $23::text[], \
             $24::text[], $25::text[]) \
             AS u(t, s, id, k, ak, ai, sk, si, ci, ap, pr, cu, ca, j, rg, sc, rt, re, so, oa, \
             ra, pl, ph, h, w)"
    ))
    .bind(column(|r| r.body.tenant.clone()))
    .bind(sequences)
    .bind(ids)
    .bind(column(|r| r.body.kind.clone()))
    .bind(column(|r| r.body.actor_kind.clone()))
    .bind(column(|r| r.body.actor_id.clone()))
    .bind(column(|r| r.body.subject_kind.clone()))
    .bind(column(|r| r.body.subject_id.clone()))
    .bind(column(|r| r.body.refs.connection_id.clone()))
    .bind(column(|r| r.body.refs.app_id.clone()))
    .bind(column(|r| r.body.refs.principal.clone()))
    .bind(column(|r| r.body.refs.clio_user_id.clone()))
    .bind(column(|r| r.body.refs.clio_account_id.clone()))
    .bind(column(|r| r.body.refs.job_id.clone()))
    .bind(column(|r| r.body.refs.region.clone()))
    // Scopes are `<family>:<access>` (no commas), joined for the trip through unnest.
    .bind(column(|r| r.body.scopes.join(",")))
    .bind(column(|r| r.body.risk_tier.clone()))
    .bind(column(|r| r.body.reason.clone()))
    .bind(column(|r| r.body.source.clone()))
    .bind(occurred)
    .bind(recorded)
    .bind(column(|r| r.body.payload.clone()))
    .bind(column(|r| r.prev_hash.clone()))
    .bind(column(|r| r.hash.clone()))
    .bind(column(|r| r.body.writer.clone()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A unique violation on `events.event_id`: another transaction stored the id first.
fn is_event_id_collision(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation() && e.constraint() == Some("events_event_id_key"))
}
