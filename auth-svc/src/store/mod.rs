//! Every SQL statement auth-svc runs, one module per table. The flows (`connect`,
//! `refresh`, `revocation`, ...) call these named functions and write no SQL themselves,
//! so a table's statements, and the locks they take, are read in one place.
//!
//! Each function runs one statement in whatever the caller hands it: `&mut *tx` to run it
//! inside the caller's transaction, or `&ctx.pool` to run it on its own. Transactions and
//! commit points therefore stay visible in the flows. Reads return domain types
//! ([`Connection`](crate::connections::Connection), [`App`](crate::apps::App)) or small
//! row structs; writes take small parameter structs instead of long positional lists.
//! Secrets come in sealed (see `token_vault`) and go out sealed: each table module holds
//! the [`Binding`](crate::token_vault::Binding)s that tie its ciphertexts to their table,
//! column and row.
//!
//! - `app_registrations`, `app_scope_versions`: [`apps`]
//! - `connections`: [`connections`] (the refresh's claim, tokens and backoff in
//!   [`connections::refresh`])
//! - `authorization_states`: [`authorization_states`]
//! - `pending_deauthorizations`: [`pending_deauthorizations`]
//! - `lease_usage`: [`lease_usage`]
//! - `encryption_key_state`: [`encryption_key_state`]; `undecryptable_secrets`:
//!   [`undecryptable_secrets`]; every sealed column, as key rotation sweeps it:
//!   [`sealed_columns`]
//!
//! The audit outbox's tables are written through `audit_outbox::enqueue`, in the flows'
//! transactions.

pub mod apps;
pub mod authorization_states;
pub mod connections;
pub mod encryption_key_state;
pub mod lease_usage;
pub mod pending_deauthorizations;
pub mod sealed_columns;
pub mod undecryptable_secrets;

use sqlx::postgres::PgQueryResult;

use crate::error::AuthError;

/// How an insert into a table with a unique key went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The row was written.
    New,
    /// A unique key refused it: such a row exists already (or was written at the same
    /// time). The caller's transaction is aborted and must be dropped.
    Duplicate,
}

/// Tells a unique violation apart from every other failure of an insert.
fn inserted(result: Result<PgQueryResult, sqlx::Error>) -> Result<Inserted, AuthError> {
    match result {
        Ok(_) => Ok(Inserted::New),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(Inserted::Duplicate),
        Err(error) => Err(error.into()),
    }
}
