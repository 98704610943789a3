//! `encryption_key_state`: which configured data key seals new secrets, as the last
//! rotation (by any replica) set it.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::error::AuthError;

/// The key the last rotation made active; `None` before the first rotation.
pub async fn active_key_id(db: impl PgExecutor<'_>) -> Result<Option<String>, AuthError> {
    let recorded: Option<(String,)> =
        sqlx::query_as("SELECT active_key_id FROM encryption_key_state")
            .fetch_optional(db)
            .await?;
    Ok(recorded.map(|(id,)| id))
}

/// A rotation to another key: who made it and when.
pub struct Rotation<'a> {
    pub active_key_id: &'a str,
    pub rotated_by: &'a str,
    pub rotated_at: DateTime<Utc>,
}

pub async fn record_rotation(
    db: impl PgExecutor<'_>,
    rotation: &Rotation<'_>,
) -> Result<(), AuthError> {
    sqlx::query(
        "INSERT INTO encryption_key_state (singleton, active_key_id, rotated_by, rotated_at) VALUES (true, $1, $2, $3) \
         ON CONFLICT (singleton) DO UPDATE SET active_key_id = $1, rotated_by = $2, rotated_at = $3",
    )
    .bind(rotation.active_key_id)
    .bind(rotation.rotated_by)
    .bind(rotation.rotated_at)
    .execute(db)
    .await?;
    Ok(())
}
