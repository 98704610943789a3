//! Webhook subscriptions and the deliveries already applied (migration 0015).

use chrono::{DateTime, Utc};
use proto::imports::v1 as pb;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub subscription_id: Uuid,
    pub connection_id: String,
    pub resource: String,
    pub tenant: String,
    pub clio_account_id: String,
    pub principal: String,
    pub clio_webhook_id: Option<i64>,
    pub secret_sealed: Option<Vec<u8>>,
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub enabled_by: String,
    pub created_at: DateTime<Utc>,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub removed_reason: Option<String>,
    pub deliveries_applied: i64,
    pub deliveries_refused: i64,
}

impl SubscriptionRow {
    pub fn to_wire(&self) -> pb::WebhookSubscription {
        let ts = |t: Option<DateTime<Utc>>| t.map(proto::time::timestamp);
        pb::WebhookSubscription {
            subscription_id: self.subscription_id.to_string(),
            connection_id: self.connection_id.clone(),
            resource: self.resource.clone(),
            status: match self.status.as_str() {
                "pending" => pb::WebhookStatus::Pending,
                "enabled" => pb::WebhookStatus::Enabled,
                "removed" => pb::WebhookStatus::Removed,
                _ => pb::WebhookStatus::Unspecified,
            } as i32,
            expires_at: ts(self.expires_at),
            created_at: ts(Some(self.created_at)),
            last_delivery_at: ts(self.last_delivery_at),
            removed_reason: self.removed_reason.clone().unwrap_or_default(),
            clio_webhook_id: self.clio_webhook_id.unwrap_or_default(),
            deliveries_applied: u64::try_from(self.deliveries_applied).unwrap_or(0),
            deliveries_refused: u64::try_from(self.deliveries_refused).unwrap_or(0),
        }
    }

    pub fn is_live(&self) -> bool {
        self.status != "removed"
    }
}

const COLUMNS: &str =
    "subscription_id, connection_id, resource, tenant, clio_account_id, principal,
    clio_webhook_id, secret_sealed, status, expires_at, enabled_by, created_at, last_delivery_at,
    removed_reason, deliveries_applied, deliveries_refused";

/// What a new subscription is made of, before Clio knows it.
pub struct NewRow<'a> {
    pub subscription_id: Uuid,
    pub connection_id: &'a str,
    pub resource: &'a str,
    pub tenant: &'a str,
    pub clio_account_id: &'a str,
    pub principal: &'a str,
    pub path_token_sha256: &'a [u8],
    pub enabled_by: &'a str,
}

/// Stores a new pending subscription; false when the connection already has a live one
/// for the resource.
pub async fn insert_pending(
    db: impl PgExecutor<'_>,
    row: &NewRow<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_subscriptions (subscription_id, connection_id, resource, tenant,
             clio_account_id, principal, path_token_sha256, status, enabled_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
         ON CONFLICT (connection_id, resource) WHERE status <> 'removed' DO NOTHING",
    )
    .bind(row.subscription_id)
    .bind(row.connection_id)
    .bind(row.resource)
    .bind(row.tenant)
    .bind(row.clio_account_id)
    .bind(row.principal)
    .bind(row.path_token_sha256)
    .bind(row.enabled_by)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Notes Clio's id and expiry of a subscription just created or renewed.
pub async fn set_at_clio(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    clio_webhook_id: i64,
    expires_at: Option<DateTime<Utc>>,
    renewed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_subscriptions SET clio_webhook_id = $2, expires_at = $3,
             renewed_at = CASE WHEN $4 THEN now() ELSE renewed_at END
         WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .bind(clio_webhook_id)
    .bind(expires_at)
    .bind(renewed)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn by_token(
    db: impl PgExecutor<'_>,
    path_token_sha256: &[u8],
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions WHERE path_token_sha256 = $1"
    ))
    .bind(path_token_sha256)
    .fetch_optional(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions WHERE subscription_id = $1"
    ))
    .bind(subscription_id)
    .fetch_optional(db)
    .await
}

/// Completes the handshake: the sealed secret is stored and the subscription delivers.
/// False when it was not pending (a second handshake).
pub async fn complete_handshake(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    secret_sealed: &[u8],
    clio_webhook_id: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_subscriptions SET secret_sealed = $2, status = 'enabled',
             clio_webhook_id = COALESCE(clio_webhook_id, $3)
         WHERE subscription_id = $1 AND status = 'pending' AND secret_sealed IS NULL",
    )
    .bind(subscription_id)
    .bind(secret_sealed)
    .bind(clio_webhook_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Remembers a delivery's body as applied; false when it was applied before (a replay).
pub async fn first_sight(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    body_sha256: &[u8],
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_deliveries_seen (subscription_id, body_sha256) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(subscription_id)
    .bind(body_sha256)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn count_applied(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_subscriptions SET deliveries_applied = deliveries_applied + 1,
             last_delivery_at = now()
         WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn count_refused(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_subscriptions SET deliveries_refused = deliveries_refused + 1
         WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a live subscription removed; false when it was removed already.
pub async fn mark_removed(
    db: impl PgExecutor<'_>,
    subscription_id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_subscriptions SET status = 'removed', removed_at = now(), removed_reason = $2
         WHERE subscription_id = $1 AND status <> 'removed'",
    )
    .bind(subscription_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A connection's subscriptions, newest first (removed ones included).
pub async fn of_connection(
    db: impl PgExecutor<'_>,
    connection_id: &str,
) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions WHERE connection_id = $1
         ORDER BY created_at DESC, resource"
    ))
    .bind(connection_id)
    .fetch_all(db)
    .await
}

/// Every live subscription.
pub async fn live(db: &PgPool) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions WHERE status <> 'removed'
         ORDER BY connection_id, resource"
    ))
    .fetch_all(db)
    .await
}

/// Forgets deliveries older than the replay window.
pub async fn prune_seen(db: impl PgExecutor<'_>, window_secs: u64) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query(
        "DELETE FROM webhook_deliveries_seen
         WHERE received_at < now() - make_interval(secs => $1::double precision)",
    )
    .bind(i64::try_from(window_secs).unwrap_or(i64::MAX))
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
