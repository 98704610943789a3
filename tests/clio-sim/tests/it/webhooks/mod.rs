//! Webhooks: subscriptions through the API, the handshake, signed deliveries of API and
//! admin changes to a real receiver, expiry on the simulated clock, retries, suspension,
//! and the hostile deliveries a receiver must withstand.

mod deliveries;
mod hostile;
mod receiver;
mod subscriptions;

use std::time::Duration;

use clio_sim::{ClioSim, Region, SimConfig, WebhookConfig, WebhookStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;
use receiver::Receiver;

/// Every permission, and the webhooks one.
pub const HOOKS: &[&str] = &[
    "webhooks:write",
    "users:read",
    "contacts:write",
    "matters:write",
    "calendar:write",
    "activities:write",
];

/// Long enough for anything a test waits for here; reached only when something is wrong.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One US region, no rate limit, plain-HTTP loopback receivers allowed, retries after 20
/// and 40 ms, suspension after two failed deliveries.
pub fn config() -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        webhooks: WebhookConfig {
            allow_http: true,
            retry_delays: vec![Duration::from_millis(20), Duration::from_millis(40)],
            suspend_after_failures: 2,
            ..WebhookConfig::default()
        },
        ..SimConfig::default()
    }
}

/// A simulator and one US connection (user 1) holding [`HOOKS`].
pub struct Hooked {
    pub sim: ClioSim,
    pub base: String,
    pub tokens: Tokens,
}

pub async fn hooked() -> Hooked {
    hooked_with(config()).await
}

pub async fn hooked_with(config: SimConfig) -> Hooked {
    let sim = start_with(config).await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, HOOKS).await;
    Hooked { sim, base, tokens }
}

/// The webhook fields every test asks for.
pub const WEBHOOK_FIELDS: &str = "id,etag,url,model,events,fields,status,expires_at";

/// `POST /api/v4/webhooks.json` with `{"data": data}`.
pub async fn create(base: &str, token: &str, data: Value) -> Answer {
    let url = format!("{base}/api/v4/webhooks.json?fields={WEBHOOK_FIELDS}");
    send_json(http().post(url), token, &json!({ "data": data })).await
}

/// `PATCH /api/v4/webhooks/{id}.json` with `{"data": data}`.
pub async fn update(base: &str, token: &str, id: i64, data: Value) -> Answer {
    let url = format!("{base}/api/v4/webhooks/{id}.json?fields={WEBHOOK_FIELDS}");
    send_json(http().patch(url), token, &json!({ "data": data })).await
}

impl Hooked {
    /// Subscribes `receiver` to `model` with `fields` (every event) and waits until the
    /// handshake has enabled it; returns its id.
    pub async fn subscribe(&self, receiver: &Receiver, model: &str, fields: &str) -> i64 {
        let data = json!({"url": receiver.url, "model": model, "fields": fields});
        self.subscribe_with(data).await
    }

    pub async fn subscribe_with(&self, data: Value) -> i64 {
        let created = create(&self.base, &self.tokens.access, data).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let id = created.body["data"]["id"].as_i64().unwrap();
        self.sim
            .admin()
            .wait_for_webhook_status(Region::Us, id, WebhookStatus::Enabled, PATIENCE)
            .await
            .unwrap();
        id
    }

    /// The id of the first record of an API listing (`contacts`, `matters`...).
    pub async fn first_id(&self, resource: &str) -> Value {
        let page = get(
            &self.base,
            &self.tokens.access,
            &format!("/api/v4/{resource}.json?limit=1"),
        )
        .await;
        page.body["data"][0]["id"].clone()
    }

    /// `PATCH /api/v4/{resource}/{id}.json` through the API.
    pub async fn patch(&self, resource: &str, id: &Value, data: Value) -> Answer {
        let id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
        let url = format!("{}/api/v4/{resource}/{id}.json", self.base);
        send_json(
            http().patch(url),
            &self.tokens.access,
            &json!({ "data": data }),
        )
        .await
    }
}

/// Renames a contact through the admin API (a change every contact subscription hears).
pub async fn rename_contact(admin: &clio_sim::AdminClient, id: &str, name: &str) {
    admin
        .update_record(
            Region::Us,
            clio_sim::Resource::Contacts,
            id,
            json!({ "name": name }),
        )
        .await
        .unwrap();
}
