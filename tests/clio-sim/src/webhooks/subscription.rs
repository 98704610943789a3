//! One webhook subscription, and the create/update bodies that make and change it,
//! validated as Clio validates them: `422 ValidationError` naming the field.

use std::collections::HashSet;

use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use url::{Host, Url};

use super::model::{WebhookEvent, WebhookModel, WebhookStatus};
use super::signature::SharedSecret;
use crate::api::ApiError;
use crate::api::Fields;
use crate::config::WebhookConfig;
use crate::dataset::{Schema, Shape};

/// Without `expires_at`, a subscription lives this long (Clio: 3 days).
pub(crate) const DEFAULT_LIFETIME: TimeDelta = TimeDelta::days(3);
/// The furthest `expires_at` may lie from now (Clio: 31 days).
pub(crate) const MAX_LIFETIME: TimeDelta = TimeDelta::days(31);
/// Clio caps the `fields` text at 1,000 characters.
const MAX_FIELDS_LEN: usize = 1_000;

/// The webhook record's fields, for the `fields` parameter of the webhook endpoints.
pub(crate) const WEBHOOK_SCHEMA: Schema = &[
    ("id", Shape::Scalar),
    ("etag", Shape::Scalar),
    ("url", Shape::Scalar),
    ("fields", Shape::Scalar),
    ("shared_secret", Shape::Scalar),
    ("model", Shape::Scalar),
    ("status", Shape::Scalar),
    ("events", Shape::Scalar),
    ("expires_at", Shape::Scalar),
    ("created_at", Shape::Scalar),
    ("updated_at", Shape::Scalar),
];

/// What the receiver answered to the latest handshake (`None` while it is being sent).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandshakeOutcome {
    /// The receiver's status code; `None` when it could not be reached.
    pub status: Option<u16>,
    /// Whether the answer carried the same `X-Hook-Secret`, which enables the webhook.
    pub echoed: bool,
    /// Why it could not be reached, if it could not.
    pub error: Option<String>,
}

/// A webhook subscription of one app in one account.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) id: i64,
    pub(crate) client_id: String,
    pub(crate) account: u32,
    /// The user whose token created it: deliveries need that user's grant to the app to
    /// be live, and leave out records hidden from that user.
    pub(crate) user_key: i64,
    pub(crate) url: String,
    pub(crate) model: WebhookModel,
    pub(crate) events: Vec<WebhookEvent>,
    pub(crate) fields: String,
    /// `fields` parsed for the model's records; `None` for models the simulator does not
    /// serve (they never fire).
    pub(crate) projection: Option<Fields>,
    pub(crate) status: WebhookStatus,
    pub(crate) secret: SharedSecret,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// Bumped on every change: the etag.
    pub(crate) version: u64,
    /// Bumped when the URL (and so the secret) changes, so a late answer to an older
    /// handshake enables nothing.
    pub(crate) generation: u64,
    pub(crate) handshake: Option<HandshakeOutcome>,
    /// Deliveries in a row that failed every attempt.
    pub(crate) consecutive_failures: u32,
    /// Records whose first update since the webhook was enabled has fired: Clio always
    /// sends that one, later ones only when a watched field changed.
    pub(crate) updates_heard: HashSet<i64>,
    /// A delivery held back by an `out_of_order` fault until the next one is sent.
    pub(crate) held: Option<u64>,
}

impl Subscription {
    /// Whether `expires_at` has passed at `now` (simulated clock).
    pub(crate) fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    pub(crate) fn etag(&self) -> String {
        format!("\"{:016x}{:016x}\"", self.id, self.version)
    }

    /// The whole webhook record as the API shows it (before `fields` projection).
    pub(crate) fn record(&self) -> Value {
        json!({
            "id": self.id,
            "etag": self.etag(),
            "url": self.url,
            "fields": self.fields,
            "shared_secret": self.secret.expose(),
            "model": self.model.as_str(),
            "status": self.status.as_str(),
            "events": self.events.iter().map(|event| event.as_str()).collect::<Vec<_>>(),
            "expires_at": stamp(self.expires_at),
            "created_at": stamp(self.created_at),
            "updated_at": stamp(self.updated_at),
        })
    }
}

/// Timestamps on the wire: RFC 3339, whole seconds, as Clio writes them.
pub(crate) fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::typed(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", message)
}

/// The fields of a create or update body that were given (null counts as not given).
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub(crate) url: Option<String>,
    pub(crate) model: Option<WebhookModel>,
    pub(crate) events: Option<Vec<WebhookEvent>>,
    pub(crate) fields: Option<String>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

impl Draft {
    /// Reads `{"data": {...}}`, checking each given field on its own; unknown keys are
    /// dropped, as Clio drops them.
    pub(crate) fn parse(
        body: &[u8],
        config: &WebhookConfig,
        now: DateTime<Utc>,
    ) -> Result<Draft, ApiError> {
        let parsed: Value = serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_parameter(format!("the body is not valid JSON: {error}"))
        })?;
        let Some(Value::Object(data)) = parsed.get("data") else {
            return Err(ApiError::bad_parameter(
                "the body must be {\"data\": {...}}",
            ));
        };
        let given = |name: &str| data.get(name).filter(|value| !value.is_null());
        let mut draft = Draft::default();
        if let Some(url) = given("url") {
            draft.url = Some(check_url(url, config)?);
        }
        if let Some(model) = given("model") {
            draft.model = Some(WebhookModel::from_wire(model).ok_or_else(|| {
                invalid(format!(
                    "model must be one of activity, bill, calendar_entry, clio_payments_payment, \
                     communication, contact, document, folder, matter, task (or its number): {model}"
                ))
            })?);
        }
        if let Some(events) = given("events") {
            draft.events = Some(check_events(events)?);
        }
        if let Some(fields) = given("fields") {
            let text = fields
                .as_str()
                .ok_or_else(|| invalid("fields must be a string such as \"id,etag\""))?;
            if text.trim().is_empty() {
                return Err(invalid("fields can't be blank"));
            }
            if text.chars().count() > MAX_FIELDS_LEN {
                return Err(invalid(format!(
                    "fields is too long (at most {MAX_FIELDS_LEN} characters)"
                )));
            }
            draft.fields = Some(text.trim().to_owned());
        }
        if let Some(expires_at) = given("expires_at") {
            draft.expires_at = Some(check_expiry(expires_at, now)?);
        }
        Ok(draft)
    }

    /// A new subscription from a create body: `url`, `model` and `fields` are required;
    /// without `events` it hears every event of the model, without `expires_at` it lives
    /// three days.
    pub(crate) fn into_subscription(
        self,
        owner: Owner,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Subscription, ApiError> {
        let url = self.url.ok_or_else(|| invalid("url can't be blank"))?;
        let model = self.model.ok_or_else(|| invalid("model can't be blank"))?;
        let fields = self
            .fields
            .ok_or_else(|| invalid("fields can't be blank"))?;
        let events = self.events.unwrap_or_else(|| model.all_events());
        check_events_of(model, &events)?;
        let projection = projection_of(model, &fields)?;
        Ok(Subscription {
            id,
            client_id: owner.client_id,
            account: owner.account,
            user_key: owner.user_key,
            url,
            model,
            events,
            fields,
            projection,
            status: WebhookStatus::Pending,
            secret: SharedSecret::generate(),
            expires_at: self.expires_at.unwrap_or(now + DEFAULT_LIFETIME),
            created_at: now,
            updated_at: now,
            version: 1,
            generation: 1,
            handshake: None,
            consecutive_failures: 0,
            updates_heard: HashSet::new(),
            held: None,
        })
    }

    /// Applies an update body. Returns whether the URL changed, which needs a new
    /// secret and a new handshake (Clio handshakes again when the URL changes).
    pub(crate) fn apply_to(
        self,
        subscription: &mut Subscription,
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        let model = self.model.unwrap_or(subscription.model);
        let events = match self.events {
            Some(events) => events,
            // A new model without new events hears every event of the new model.
            None if model != subscription.model => model.all_events(),
            None => subscription.events.clone(),
        };
        check_events_of(model, &events)?;
        let fields = self.fields.unwrap_or_else(|| subscription.fields.clone());
        let projection = projection_of(model, &fields)?;
        let url_changed = self
            .url
            .as_ref()
            .is_some_and(|url| *url != subscription.url);
        if let Some(url) = self.url {
            subscription.url = url;
        }
        if url_changed {
            subscription.secret = SharedSecret::generate();
            subscription.status = WebhookStatus::Pending;
            subscription.generation += 1;
            subscription.handshake = None;
            subscription.updates_heard.clear();
        }
        if model != subscription.model || fields != subscription.fields {
            subscription.updates_heard.clear();
        }
        subscription.model = model;
        subscription.events = events;
        subscription.fields = fields;
        subscription.projection = projection;
        if let Some(expires_at) = self.expires_at {
            subscription.expires_at = expires_at;
        }
        subscription.updated_at = now;
        subscription.version += 1;
        Ok(url_changed)
    }
}

/// Who a new subscription belongs to: the token's app, account and user.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) client_id: String,
    pub(crate) account: u32,
    pub(crate) user_key: i64,
}

/// Clio takes `https` URLs only; with `allow_http`, plain HTTP on loopback too.
fn check_url(value: &Value, config: &WebhookConfig) -> Result<String, ApiError> {
    let refused = || invalid(format!("url must be an https URL: {value}"));
    let text = value.as_str().ok_or_else(refused)?.trim();
    let url = Url::parse(text).map_err(|_| refused())?;
    let loopback = match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(refused()),
    };
    let accepted = match url.scheme() {
        "https" => true,
        "http" => config.allow_http && loopback,
        _ => false,
    };
    if !accepted {
        return Err(refused());
    }
    Ok(text.to_owned())
}

fn check_events(value: &Value) -> Result<Vec<WebhookEvent>, ApiError> {
    let Value::Array(items) = value else {
        return Err(invalid("events must be a list such as [\"created\"]"));
    };
    if items.is_empty() {
        return Err(invalid("events can't be empty"));
    }
    let mut events = Vec::new();
    for item in items {
        let event = item
            .as_str()
            .and_then(WebhookEvent::from_wire)
            .ok_or_else(|| invalid(format!("events: {item} is not a webhook event")))?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

fn check_events_of(model: WebhookModel, events: &[WebhookEvent]) -> Result<(), ApiError> {
    match events.iter().find(|event| !model.supports(**event)) {
        Some(event) => Err(invalid(format!(
            "events: {event} is not an event of the {model} model"
        ))),
        None => Ok(()),
    }
}

/// `fields` checked against the model's records (for served models).
fn projection_of(model: WebhookModel, fields: &str) -> Result<Option<Fields>, ApiError> {
    let Some(resource) = model.resource() else {
        return Ok(None);
    };
    Fields::parse(resource, Some(fields))
        .map(Some)
        .map_err(|error| invalid(format!("fields: {}", error.message())))
}

fn check_expiry(value: &Value, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let at = value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| invalid(format!("expires_at must be an ISO-8601 timestamp: {value}")))?;
    if at <= now {
        return Err(invalid("expires_at must be in the future"));
    }
    if at > now + MAX_LIFETIME {
        return Err(invalid("expires_at can be at most 31 days from now"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(allow_http: bool) -> WebhookConfig {
        WebhookConfig {
            allow_http,
            ..WebhookConfig::default()
        }
    }

    fn message(error: ApiError) -> String {
        error.message().to_owned()
    }

    fn parse(data: Value, allow_http: bool) -> Result<Draft, ApiError> {
        let body = serde_json::to_vec(&json!({ "data": data })).unwrap();
        Draft::parse(&body, &config(allow_http), Utc::now())
    }

    #[test]
    fn urls_must_be_https_unless_loopback_http_is_allowed() {
        assert!(parse(json!({"url": "https://hooks.example/x"}), false).is_ok());
        for url in [
            "http://127.0.0.1:9/x",
            "ftp://a.example/x",
            "not a url",
            "https://",
        ] {
            let error = message(parse(json!({ "url": url }), false).unwrap_err());
            assert!(
                error.starts_with("url must be an https URL"),
                "{url}: {error}"
            );
        }
        for url in [
            "http://127.0.0.1:9/x",
            "http://localhost:1/y",
            "http://[::1]:2/z",
        ] {
            assert!(parse(json!({ "url": url }), true).is_ok(), "{url}");
        }
        assert!(parse(json!({"url": "http://hooks.example/x"}), true).is_err());
    }

    #[test]
    fn expiry_lies_in_the_next_31_days() {
        let now = Utc::now();
        let at = |delta: TimeDelta| json!({"expires_at": stamp(now + delta)});
        assert!(parse(at(TimeDelta::days(30)), false).is_ok());
        let past = message(parse(at(TimeDelta::seconds(-5)), false).unwrap_err());
        assert_eq!(past, "expires_at must be in the future");
        let far = message(parse(at(TimeDelta::days(32)), false).unwrap_err());
        assert_eq!(far, "expires_at can be at most 31 days from now");
        let bad = message(parse(json!({"expires_at": "soon"}), false).unwrap_err());
        assert!(bad.starts_with("expires_at must be"), "{bad}");
    }

    #[test]
    fn a_create_needs_url_model_and_fields_of_that_model() {
        let owner = || Owner {
            client_id: "c".into(),
            account: 1,
            user_key: 1,
        };
        let now = Utc::now();
        let draft = parse(
            json!({"url": "https://a.example", "model": "contact"}),
            false,
        )
        .unwrap();
        assert_eq!(
            message(draft.into_subscription(owner(), 1, now).unwrap_err()),
            "fields can't be blank"
        );
        let draft = parse(
            json!({"url": "https://a.example", "model": "contact", "fields": "id,shoe"}),
            false,
        )
        .unwrap();
        assert_eq!(
            message(draft.into_subscription(owner(), 1, now).unwrap_err()),
            "fields: shoe is not a valid field"
        );
        let draft = parse(
            json!({"url": "https://a.example", "model": 6, "fields": "id", "events": ["matter_closed"]}),
            false,
        )
        .unwrap();
        assert_eq!(
            message(draft.into_subscription(owner(), 1, now).unwrap_err()),
            "events: matter_closed is not an event of the contact model"
        );
        let draft = parse(
            json!({"url": "https://a.example", "model": "matter", "fields": "id,etag,status"}),
            false,
        )
        .unwrap();
        let subscription = draft.into_subscription(owner(), 7, now).unwrap();
        assert_eq!(subscription.events.len(), 6);
        assert_eq!(subscription.expires_at, now + DEFAULT_LIFETIME);
        assert_eq!(subscription.status, WebhookStatus::Pending);
        assert!(!format!("{subscription:?}").contains(subscription.secret.expose()));
    }
}
