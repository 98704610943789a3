//! The columns that hold sealed secrets, across tables, and the statements a key rotation
//! runs over each of them (`<name>_ct` holds the ciphertext, `<name>_key_id` its key).

use std::fmt;

use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::error::AuthError;
use crate::store::{apps, authorization_states, connections, pending_deauthorizations};
use crate::token_vault::{Binding, Sealed};

/// A column holding ciphertexts, and where its row id is.
pub struct SealedColumn {
    pub table: &'static str,
    /// The column name in the binding (`access_token`); the ciphertext is `<name>_ct`
    /// and its key id `<name>_key_id`.
    pub name: &'static str,
    pub id_column: &'static str,
}

impl SealedColumn {
    /// Ties a ciphertext to this table, column and row: it opens nowhere else.
    pub fn binding(&self, row: impl fmt::Display) -> Binding {
        Binding::new(self.table, self.name, row)
    }

    /// `WHERE` conditions: a secret not under key `$1` and not set aside in
    /// `undecryptable_secrets`.
    fn not_under_key(&self) -> String {
        format!(
            "{name}_key_id IS NOT NULL AND {name}_key_id <> $1 AND NOT EXISTS (\
             SELECT 1 FROM undecryptable_secrets u WHERE u.table_name = '{table}' \
             AND u.column_name = '{name}' AND u.row_id = {table}.{id} AND u.key_id = {table}.{name}_key_id)",
            name = self.name,
            table = self.table,
            id = self.id_column
        )
    }
}

/// Every sealed column, in the order a rotation goes through them.
pub const ALL: [&SealedColumn; 6] = [
    &apps::CLIENT_SECRET,
    &connections::ACCESS_TOKEN,
    &connections::REFRESH_TOKEN,
    &pending_deauthorizations::ACCESS_TOKEN,
    &pending_deauthorizations::REFRESH_TOKEN,
    &authorization_states::PKCE_VERIFIER,
];

/// The key ids the column's secrets are sealed under.
pub async fn key_ids(
    db: impl PgExecutor<'_>,
    column: &SealedColumn,
) -> Result<Vec<String>, AuthError> {
    let sql = format!(
        "SELECT DISTINCT {name}_key_id FROM {table} WHERE {name}_key_id IS NOT NULL",
        name = column.name,
        table = column.table
    );
    let ids: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(db).await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// How many of the column's secrets are not under `key` (leaving out those set aside).
pub async fn count_not_under(
    db: impl PgExecutor<'_>,
    column: &SealedColumn,
    key: &str,
) -> Result<i64, AuthError> {
    let sql = format!(
        "SELECT count(*) FROM {table} WHERE {pending}",
        table = column.table,
        pending = column.not_under_key(),
    );
    Ok(sqlx::query_scalar(&sql).bind(key).fetch_one(db).await?)
}

/// One sealed secret as stored.
#[derive(FromRow)]
pub struct SealedCell {
    pub row_id: Uuid,
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

/// Up to `limit` of the column's secrets not under `key` (leaving out those set aside),
/// locked `FOR UPDATE SKIP LOCKED`: rows someone else holds are skipped, not waited for.
pub async fn lock_not_under(
    db: impl PgExecutor<'_>,
    column: &SealedColumn,
    key: &str,
    limit: i64,
) -> Result<Vec<SealedCell>, AuthError> {
    let sql = format!(
        "SELECT {id} AS row_id, {name}_ct AS ciphertext, {name}_key_id AS key_id FROM {table} \
         WHERE {pending} LIMIT $2 FOR UPDATE SKIP LOCKED",
        id = column.id_column,
        name = column.name,
        table = column.table,
        pending = column.not_under_key(),
    );
    Ok(sqlx::query_as(&sql)
        .bind(key)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// Replaces one secret of the column with `sealed`.
pub async fn write(
    db: impl PgExecutor<'_>,
    column: &SealedColumn,
    row_id: Uuid,
    sealed: &Sealed,
) -> Result<(), AuthError> {
    let sql = format!(
        "UPDATE {table} SET {name}_ct = $2, {name}_key_id = $3 WHERE {id} = $1",
        id = column.id_column,
        name = column.name,
        table = column.table
    );
    sqlx::query(&sql)
        .bind(row_id)
        .bind(&sealed.ciphertext)
        .bind(&sealed.key_id)
        .execute(db)
        .await?;
    Ok(())
}
