//! `undecryptable_secrets`: sealed secrets a key rotation could not open, set aside so
//! later batches skip them (see `sealed_columns`).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::AuthError;
use crate::store::sealed_columns::SealedColumn;

/// A secret found undecryptable, and what was wrong with it.
pub struct Undecryptable<'a> {
    pub column: &'a SealedColumn,
    pub row_id: Uuid,
    pub key_id: &'a str,
    pub problem: String,
    pub found_at: DateTime<Utc>,
}

/// Records the secret; one recorded before stays as it was.
pub async fn insert(db: impl PgExecutor<'_>, found: &Undecryptable<'_>) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO undecryptable_secrets (table_name, column_name, row_id, key_id, problem, found_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(found.column.table)
    .bind(found.column.name)
    .bind(found.row_id)
    .bind(found.key_id)
    .bind(&found.problem)
    .bind(found.found_at)
    .execute(db)
    .await?;
    Ok(())
}
