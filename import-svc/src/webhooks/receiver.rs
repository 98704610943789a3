//! The receiver: the one route Clio calls, `POST /clio/webhooks/{path token}`.
//!
//! The path token (256 random bits) names the subscription; the request is one of:
//!
//! - **the handshake**: `X-Hook-Secret` and no signature. Accepted once, for a pending
//!   subscription: the secret is sealed and stored, and echoed back in `X-Hook-Secret`,
//!   which is how Clio activates the subscription. A second handshake (someone trying to
//!   swap the secret) is refused.
//! - **a delivery**: `X-Hook-Signature`, lowercase hex HMAC-SHA256 of the exact body under
//!   the secret, checked in constant time (`ring::hmac::verify`) before the body is read
//!   as JSON. The body's SHA-256 is remembered for `replay_window_secs`: the same bytes
//!   again are refused (and change nothing). Then the change is applied ([`super::apply`]);
//!   a record the payload carries only in part is read from Clio by id first.
//!
//! Answers: 200 applied (or already applied); 400 a signed delivery that is not one; 401
//! unsigned or wrongly signed; 403 a second handshake or a delivery before the handshake;
//! 404 an unknown path; 410 a removed subscription (Clio stops delivering); 503 when
//! Postgres, auth-svc or Clio could not be reached, so Clio delivers again. Every refusal
//! is counted on the subscription and audited (`WEBHOOK_DELIVERY_REFUSED`), at most
//! `refusals_audited_per_minute` a subscription; a flood beyond that is only counted, so
//! it cannot flood the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clio_api::{ClioError, Creator, Credentials};
use ring::hmac;
use scope_catalog::Resource;
use secrecy::ExposeSecret;
use serde_json::Value;
use uuid::Uuid;

use super::apply::{self, Applied, Change, Delivery};
use super::events;
use super::manager::Webhooks;
use super::sealing::Sealer;
use super::sha256;
use super::store::{self, SubscriptionRow};
use crate::job::listing::default_fields;
use crate::metrics::ImportMetrics;
use crate::records::Target;

pub const SECRET_HEADER: &str = "x-hook-secret";
pub const SIGNATURE_HEADER: &str = "x-hook-signature";
/// Longest shared secret accepted in a handshake.
const MAX_SECRET_CHARS: usize = 256;

pub struct Receiver {
    pub webhooks: Webhooks,
    pub sealer: Arc<Sealer>,
    /// Targeted reads of records a delivery carries only in part.
    pub creator: Creator,
    pub metrics: ImportMetrics,
    refusals: Mutex<HashMap<Uuid, Window>>,
}

/// Refusals audited for one subscription in the current minute, and those only counted.
struct Window {
    started: Instant,
    audited: u32,
    unaudited: u64,
}

impl Receiver {
    pub fn new(
        webhooks: Webhooks,
        sealer: Arc<Sealer>,
        creator: Creator,
        metrics: ImportMetrics,
    ) -> Self {
        Receiver {
            webhooks,
            sealer,
            creator,
            metrics,
            refusals: Mutex::new(HashMap::new()),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.webhooks.config.max_body_bytes;
        Router::new()
            .route("/clio/webhooks/{token}", post(receive))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    /// Counts a refusal on the subscription and audits it unless this minute's audited
    /// refusals of the subscription are used up.
    async fn refuse(
        &self,
        row: &SubscriptionRow,
        why: &str,
        from: SocketAddr,
        status: StatusCode,
    ) -> Response {
        self.metrics.webhook_request(refusal_outcome(why));
        tracing::warn!(subscription_id = %row.subscription_id, %why, %from, "webhook request refused");
        let audit_it = self.admit_audit(row.subscription_id);
        let recorded = async {
            let mut tx = self.webhooks.pool.begin().await?;
            store::count_refused(&mut *tx, row.subscription_id).await?;
            if let Some(unaudited_before) = audit_it {
                self.webhooks
                    .audit
                    .enqueue_event(
                        &mut tx,
                        events::refused(row, why, &from.to_string(), unaudited_before),
                    )
                    .await
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            }
            tx.commit().await?;
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match recorded {
            Ok(()) => self.webhooks.audit.committed(),
            Err(error) => tracing::warn!(%error, "cannot record a refused webhook request"),
        }
        (status, why.to_owned()).into_response()
    }

    /// `Some(refusals not audited since the last audited one)` when this one is audited.
    fn admit_audit(&self, subscription_id: Uuid) -> Option<u64> {
        let mut windows = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        // Stale windows go, so the map stays as small as the subscriptions refused lately.
        windows.retain(|_, w| now.duration_since(w.started) < Duration::from_secs(120));
        let window = windows.entry(subscription_id).or_insert(Window {
            started: now,
            audited: 0,
            unaudited: 0,
        });
        if now.duration_since(window.started) >= Duration::from_secs(60) {
            window.started = now;
            window.audited = 0;
        }
        if window.audited < self.webhooks.config.refusals_audited_per_minute {
            window.audited += 1;
            Some(std::mem::take(&mut window.unaudited))
        } else {
            window.unaudited += 1;
            self.metrics.webhook_request("refusal_not_audited");
            None
        }
    }

    async fn handshake(
        &self,
        row: &SubscriptionRow,
        headers: &HeaderMap,
        body: &[u8],
        from: SocketAddr,
    ) -> Response {
        if row.status != "pending" || row.secret_sealed.is_some() {
            return self
                .refuse(row, "second_handshake", from, StatusCode::FORBIDDEN)
                .await;
        }
        let Some(secret) = headers
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_SECRET_CHARS
                    && s.bytes().all(|b| b.is_ascii_graphic())
            })
        else {
            return self
                .refuse(row, "bad_secret", from, StatusCode::BAD_REQUEST)
                .await;
        };
        // The handshake names its webhook; once Clio's answer to the create is stored it
        // must be the same one.
        let named = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/data/webhook_id").and_then(Value::as_i64));
        if let (Some(known), Some(named)) = (row.clio_webhook_id, named)
            && known != named
        {
            return self
                .refuse(row, "other_webhook", from, StatusCode::BAD_REQUEST)
                .await;
        }
        let sealed = match self.sealer.seal(row.subscription_id, secret) {
            Ok(sealed) => sealed,
            Err(error) => {
                tracing::error!(%error, "cannot seal a webhook secret");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        };
        match store::complete_handshake(&self.webhooks.pool, row.subscription_id, &sealed, named)
            .await
        {
            Ok(true) => {
                self.metrics.webhook_request("handshake");
                tracing::info!(subscription_id = %row.subscription_id, "webhook handshake completed");
                let mut response = StatusCode::OK.into_response();
                if let Ok(value) = HeaderValue::from_str(secret) {
                    response.headers_mut().insert(SECRET_HEADER, value);
                }
                response
            }
            Ok(false) => {
                self.refuse(row, "second_handshake", from, StatusCode::FORBIDDEN)
                    .await
            }
            Err(error) => unavailable(&error),
        }
    }

    async fn delivery(
        &self,
        row: &SubscriptionRow,
        headers: &HeaderMap,
        body: &[u8],
        from: SocketAddr,
    ) -> Response {
        if row.status == "removed" {
            return (StatusCode::GONE, "subscription removed").into_response();
        }
        let Some(sealed) = row
            .secret_sealed
            .as_deref()
            .filter(|_| row.status == "enabled")
        else {
            return self
                .refuse(row, "not_enabled", from, StatusCode::FORBIDDEN)
                .await;
        };
        let Some(signature) = headers.get(SIGNATURE_HEADER) else {
            return self
                .refuse(row, "unsigned", from, StatusCode::UNAUTHORIZED)
                .await;
        };
        let secret = match self.sealer.open(row.subscription_id, sealed) {
            Ok(secret) => secret,
            Err(error) => {
                tracing::error!(subscription_id = %row.subscription_id, %error, "cannot open a webhook secret");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        let signed = signature
            .to_str()
            .ok()
            .and_then(|s| hex::decode(s.trim()).ok())
            .is_some_and(|tag| hmac::verify(&key, body, &tag).is_ok());
        if !signed {
            return self
                .refuse(row, "bad_signature", from, StatusCode::UNAUTHORIZED)
                .await;
        }
        let delivery = match Delivery::parse(body) {
            Ok(delivery) => delivery,
            Err(problem) => {
                let response = self
                    .refuse(row, "malformed", from, StatusCode::BAD_REQUEST)
                    .await;
                tracing::warn!(subscription_id = %row.subscription_id, %problem, "a signed webhook delivery is not one");
                return response;
            }
        };
        if Some(delivery.webhook_id) != row.clio_webhook_id && row.clio_webhook_id.is_some() {
            return self
                .refuse(row, "other_webhook", from, StatusCode::BAD_REQUEST)
                .await;
        }
        let Ok(resource) = row.resource.parse::<Resource>() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let change = match self.complete(row, resource, delivery.change).await {
            Ok(change) => change,
            Err(response) => return response,
        };
        match self.store(row, resource, &change, body).await {
            Ok(Some(applied)) => {
                self.metrics.webhook_request(match applied {
                    Applied::Written => "applied",
                    Applied::Unchanged => "unchanged",
                });
                StatusCode::OK.into_response()
            }
            Ok(None) => {
                // Applied before: nothing changes, and Clio must not try again.
                let _ = self.refuse(row, "replay", from, StatusCode::OK).await;
                (StatusCode::OK, "already applied").into_response()
            }
            Err(error) => unavailable(&error),
        }
    }

    /// The change with its whole record: a partial one is read from Clio by id (one Clio
    /// no longer returns is deleted).
    async fn complete(
        &self,
        row: &SubscriptionRow,
        resource: Resource,
        change: Change,
    ) -> Result<Change, Response> {
        let Change::Upsert(record) = &change else {
            return Ok(change);
        };
        if apply::is_complete(resource, record) {
            return Ok(change);
        }
        let id = apply::data_id(record).unwrap_or_default();
        let lease = self
            .webhooks
            .leases
            .lease(
                &row.connection_id,
                &[resource.required_scope()],
                "webhook: read a changed record",
                false,
            )
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot lease a token to read a changed record");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            })?;
        let gate = self.webhooks.gates.gate(&row.connection_id);
        let read = self
            .creator
            .read(
                &Credentials {
                    api_base: &lease.api_base,
                    token: &lease.token,
                    gate: &gate,
                    budget: lease.budget(),
                    reserve: self.webhooks.reserve,
                },
                resource.as_str(),
                &id,
                &default_fields(resource).join(","),
            )
            .await;
        match read {
            Ok(Some(full)) => Ok(Change::Upsert(full)),
            Ok(None) => Ok(Change::Delete(record.clone())),
            Err(
                error @ (ClioError::Transient { .. }
                | ClioError::RateLimited { .. }
                | ClioError::InvalidToken { .. }),
            ) => {
                tracing::warn!(%error, "cannot read a changed record; Clio will deliver again");
                Err(StatusCode::SERVICE_UNAVAILABLE.into_response())
            }
            Err(error) => {
                tracing::warn!(%error, "Clio refused the read of a changed record");
                Err((StatusCode::BAD_REQUEST, "the changed record cannot be read").into_response())
            }
        }
    }

    /// Applies the change unless this body was applied before (`None`).
    async fn store(
        &self,
        row: &SubscriptionRow,
        resource: Resource,
        change: &Change,
        body: &[u8],
    ) -> Result<Option<Applied>, sqlx::Error> {
        let mut tx = self.webhooks.pool.begin().await?;
        if !store::first_sight(&mut *tx, row.subscription_id, &sha256(body)).await? {
            return Ok(None);
        }
        let target = Target {
            resource,
            account_id: &row.clio_account_id,
            connection_id: &row.connection_id,
            job_id: row.subscription_id,
            now: chrono::Utc::now(),
        };
        let applied =
            apply::apply(&mut tx, &target, change)
                .await
                .map_err(|error| match error {
                    crate::records::RecordError::Database(error) => error,
                    other => sqlx::Error::Protocol(other.to_string()),
                })?;
        store::count_applied(&mut *tx, row.subscription_id).await?;
        tx.commit().await?;
        Ok(Some(applied))
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(token): Path<String>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        receiver.metrics.webhook_request("unknown_path");
        return StatusCode::NOT_FOUND.into_response();
    }
    let row = match store::by_token(&receiver.webhooks.pool, &sha256(token.as_bytes())).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            receiver.metrics.webhook_request("unknown_path");
            return StatusCode::NOT_FOUND.into_response();
        }
        Err(error) => {
            // Whose delivery this was is unknown: every subscription may have a gap.
            receiver.webhooks.suspect_gap(None);
            return unavailable(&error);
        }
    };
    let is_handshake =
        headers.contains_key(SECRET_HEADER) && !headers.contains_key(SIGNATURE_HEADER);
    let response = if is_handshake {
        receiver.handshake(&row, &headers, &body, from).await
    } else {
        receiver.delivery(&row, &headers, &body, from).await
    };
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        receiver.webhooks.suspect_gap(Some(row.subscription_id));
    }
    response
}

fn unavailable(error: &sqlx::Error) -> Response {
    tracing::warn!(%error, "webhook request not handled: database unavailable");
    (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
}

fn refusal_outcome(why: &str) -> &'static str {
    match why {
        "unsigned" => "refused_unsigned",
        "bad_signature" => "refused_bad_signature",
        "replay" => "refused_replay",
        "second_handshake" => "refused_second_handshake",
        "not_enabled" => "refused_not_enabled",
        "malformed" => "refused_malformed",
        _ => "refused_other",
    }
}
