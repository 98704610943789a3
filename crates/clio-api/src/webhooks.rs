//! Clio's webhook subscriptions (`/api/v4/webhooks`): create, renew, read and delete.
//! See `docs/clio-webhooks.md` for what Clio documents and what the simulator does.
//!
//! Each call is one request ([`crate::one_call`]), after the token's gate and the app's
//! budget. The shared secret Clio generates never comes through here: it arrives in the
//! handshake request at the receiver.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{HttpSettings, http_client};
use crate::error::ClioError;
use crate::one_call::{Credentials, api_url, send};

/// The fields of a subscription read back.
const FIELDS: &str = "id,status,expires_at";

/// A subscription as Clio shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: i64,
    /// `pending` (no handshake yet), `enabled`, `suspended`.
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Subscription {
    fn of(data: &Value) -> Result<Subscription, ClioError> {
        let id = data
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| ClioError::Other {
                status: None,
                detail: "a webhook without a numeric id".into(),
            })?;
        Ok(Subscription {
            id,
            status: data
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            expires_at: data
                .get("expires_at")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc()),
        })
    }
}

/// What to subscribe to.
pub struct NewSubscription<'a> {
    /// Where Clio delivers (the receiver's URL for this subscription).
    pub url: &'a str,
    /// Clio's model name (`contact`, `calendar_entry`).
    pub model: &'a str,
    /// The record fields each delivery carries (Clio requires them).
    pub fields: &'a str,
    pub events: &'a [&'a str],
    pub expires_at: DateTime<Utc>,
}

/// Manages subscriptions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
}

impl WebhookClient {
    pub fn new(http: HttpSettings) -> Result<Self, ClioError> {
        Ok(WebhookClient {
            http: http_client(http)?,
        })
    }

    pub async fn create(
        &self,
        credentials: &Credentials<'_>,
        new: &NewSubscription<'_>,
    ) -> Result<Subscription, ClioError> {
        let mut url = api_url(credentials.api_base, "webhooks")?;
        url.query_pairs_mut().append_pair("fields", FIELDS);
        let body = json!({ "data": {
            "url": new.url,
            "model": new.model,
            "fields": new.fields,
            "events": new.events,
            "expires_at": timestamp(new.expires_at),
        }});
        let data = send(
            &self.http,
            credentials,
            Method::POST,
            url,
            Some(&body),
            false,
        )
        .await?
        .ok_or_else(|| missing("create"))?;
        Subscription::of(&data)
    }

    /// Moves the subscription's expiry; `None` when Clio no longer has it.
    pub async fn renew(
        &self,
        credentials: &Credentials<'_>,
        id: i64,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Subscription>, ClioError> {
        let mut url = api_url(credentials.api_base, &format!("webhooks/{id}"))?;
        url.query_pairs_mut().append_pair("fields", FIELDS);
        let body = json!({ "data": { "expires_at": timestamp(expires_at) } });
        send(
            &self.http,
            credentials,
            Method::PATCH,
            url,
            Some(&body),
            true,
        )
        .await?
        .map(|data| Subscription::of(&data))
        .transpose()
    }

    /// The subscription as Clio shows it now; `None` when it is gone.
    pub async fn get(
        &self,
        credentials: &Credentials<'_>,
        id: i64,
    ) -> Result<Option<Subscription>, ClioError> {
        let mut url = api_url(credentials.api_base, &format!("webhooks/{id}"))?;
        url.query_pairs_mut().append_pair("fields", FIELDS);
        send(&self.http, credentials, Method::GET, url, None, true)
            .await?
            .map(|data| Subscription::of(&data))
            .transpose()
    }

    /// Deletes the subscription; one already gone is fine.
    pub async fn delete(&self, credentials: &Credentials<'_>, id: i64) -> Result<(), ClioError> {
        let url = api_url(credentials.api_base, &format!("webhooks/{id}"))?;
        send(&self.http, credentials, Method::DELETE, url, None, true).await?;
        Ok(())
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn missing(call: &str) -> ClioError {
    ClioError::Other {
        status: None,
        detail: format!("the answer to a webhook {call} has no subscription"),
    }
}
