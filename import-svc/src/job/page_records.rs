//! Storing one page's records so that a record Postgres cannot hold costs only itself.
//!
//! [`clio_api::record_check`] leaves out what is known to be unstorable (a NUL, a lone
//! surrogate, deep nesting, an oversized record). As a last line of defence, a page whose
//! upsert Postgres still refuses as bad data (SQLSTATE class 22) is stored again record by
//! record, each under its own savepoint, and the records it refuses join the skipped ones.
//! Skipped records are listed in `skipped_records` with their reason and counted in the
//! checkpoint's `records_skipped`, in the page's transaction; a skipped record whose id is
//! readable still counts as seen in Clio (so an older stored version is not swept as
//! deleted).

use clio_api::SkippedRecord;
use scope_catalog::Resource;
use serde_json::{Value, json};
use sqlx::{Acquire, PgPool, Postgres, Transaction};

use crate::records::{self, RecordError, Target, Upserted};

/// Postgres refused a value itself (SQLSTATE class 22, "data exception": an untranslatable
/// character, a NUL in text, a value out of range...). Trying again cannot help.
pub fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("22")),
        _ => false,
    }
}

/// What storing a page did.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoredPage {
    pub upserted: Upserted,
    /// Records of the page left out (checked out before, or refused by Postgres).
    pub skipped: u64,
}

/// Begins a page's transaction, committed without waiting for its WAL flush (see
/// `job::pages` for why that loses nothing). One round trip: both statements go as one
/// simple query.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await
}

/// Upserts `records` (see [`records::upsert_page`]) and records `skipped`, in `tx`.
///
/// The page is tried whole, without a savepoint (two round trips and a subtransaction a
/// page saved). Should Postgres refuse it as bad data, which aborts `tx`, `tx` is rolled
/// back and replaced by a fresh page transaction from `pool` in which the page is stored
/// record by record. So `tx` must hold nothing of the page's yet: what it held is lost.
pub async fn store_page(
    pool: &PgPool,
    tx: &mut Transaction<'static, Postgres>,
    target: &Target<'_>,
    records: &[Value],
    skipped: &[SkippedRecord],
) -> Result<StoredPage, RecordError> {
    let mut skipped = skipped.to_vec();
    let upserted = if records.is_empty() {
        Upserted::default()
    } else {
        match records::upsert_page(tx, target, records).await {
            Ok(upserted) => upserted,
            Err(RecordError::Database(error)) if is_data_error(&error) => {
                let refused = std::mem::replace(tx, begin(pool).await?);
                refused.rollback().await?;
                tracing::warn!(
                    resource = target.resource.as_str(),
                    %error,
                    "postgres refused a page as bad data; storing it record by record"
                );
                one_by_one(tx, target, records, &mut skipped).await?
            }
            Err(error) => return Err(error),
        }
    };
    record_skipped(tx, target, &skipped).await?;
    Ok(StoredPage {
        upserted,
        skipped: u64::try_from(skipped.len()).unwrap_or(u64::MAX),
    })
}

/// Each record under its own savepoint; those Postgres refuses as bad data are skipped.
async fn one_by_one(
    tx: &mut Transaction<'_, Postgres>,
    target: &Target<'_>,
    records: &[Value],
    skipped: &mut Vec<SkippedRecord>,
) -> Result<Upserted, RecordError> {
    let mut total = Upserted::default();
    for record in records {
        let mut one = tx.begin().await?;
        match records::upsert_page(&mut one, target, std::slice::from_ref(record)).await {
            Ok(upserted) => {
                one.commit().await?;
                total.rows += upserted.rows;
                total.max_updated_at = total.max_updated_at.max(upserted.max_updated_at);
            }
            Err(RecordError::Database(error)) if is_data_error(&error) => {
                one.rollback().await?;
                skipped.push(SkippedRecord::new(
                    record.get("id").cloned(),
                    format!("Postgres refused the record: {error}"),
                ));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(total)
}

/// Lists the skipped records, counts them in the checkpoint and marks the ones with a
/// usable id as seen.
async fn record_skipped(
    tx: &mut Transaction<'_, Postgres>,
    target: &Target<'_>,
    skipped: &[SkippedRecord],
) -> Result<(), RecordError> {
    if skipped.is_empty() {
        return Ok(());
    }
    for skip in skipped {
        tracing::warn!(
            resource = target.resource.as_str(),
            clio_id = skip.id_text().unwrap_or_default(),
            reason = %skip.reason,
            "clio record skipped"
        );
    }
    let ids: Vec<Option<String>> = skipped.iter().map(SkippedRecord::id_text).collect();
    let reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
    sqlx::query(
        "INSERT INTO skipped_records (job_id, resource, clio_account_id, clio_id, reason, at)
         SELECT $1, $2, $3, u.clio_id, u.reason, $4
         FROM UNNEST($5::text[], $6::text[]) WITH ORDINALITY AS u(clio_id, reason, n)
         ORDER BY u.n",
    )
    .bind(target.job_id)
    .bind(target.resource.as_str())
    .bind(target.account_id)
    .bind(target.now)
    .bind(&ids)
    .bind(&reasons)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE job_resources SET records_skipped = records_skipped + $3
         WHERE job_id = $1 AND resource = $2",
    )
    .bind(target.job_id)
    .bind(target.resource.as_str())
    .bind(i64::try_from(skipped.len()).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    let seen: Vec<Value> = skipped
        .iter()
        .filter_map(|s| usable_id(target.resource, s.id.as_ref()?))
        .map(|id| json!({ "id": id }))
        .collect();
    if !seen.is_empty() {
        records::mark_seen(tx, target, &seen).await?;
    }
    Ok(())
}

/// The id as the resource's table keys it, when Postgres can take it.
fn usable_id(resource: Resource, id: &Value) -> Option<Value> {
    if resource.has_string_ids() {
        match id {
            Value::String(s) if !s.is_empty() && !s.contains('\0') && s.len() <= 256 => {
                Some(id.clone())
            }
            Value::Number(n) => Some(Value::String(n.to_string())),
            _ => None,
        }
    } else {
        match id {
            Value::Number(n) => n.as_i64().map(Value::from),
            Value::String(s) => s.parse::<i64>().ok().map(Value::from),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_the_table_can_key_are_marked_seen() {
        let contacts = Resource::Contacts;
        assert_eq!(usable_id(contacts, &json!(5)), Some(json!(5)));
        assert_eq!(usable_id(contacts, &json!("6")), Some(json!(6)));
        assert_eq!(usable_id(contacts, &json!("x")), None);
        assert_eq!(usable_id(contacts, &json!(1.5)), None);
        let entries = Resource::CalendarEntries;
        assert_eq!(usable_id(entries, &json!("a-1")), Some(json!("a-1")));
        assert_eq!(usable_id(entries, &json!(7)), Some(json!("7")));
        assert_eq!(usable_id(entries, &json!("a\0")), None);
        assert_eq!(usable_id(entries, &json!("")), None);
    }
}
