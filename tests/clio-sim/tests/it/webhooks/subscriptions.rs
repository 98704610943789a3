//! Making, reading, renewing and deleting subscriptions: the handshake, permissions,
//! validation, expiry on the simulated clock, call counting and the rate limit.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clio_sim::{
    AppSpec, ExpiredWebhooks, HandshakeOutcome, RateLimit, Region, Resource, SimConfig,
    WebhookConfig, WebhookStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::receiver::{Handshake, Receiver};
use super::*;

fn at(delta: TimeDelta) -> String {
    (Utc::now() + delta).to_rfc3339()
}

fn time_of(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .to_utc()
}

fn app_named(client_id: &str, permissions: &[&str]) -> AppSpec {
    AppSpec {
        client_id: client_id.into(),
        ..app(permissions)
    }
}

#[tokio::test]
async fn a_webhook_starts_pending_and_the_echoed_handshake_enables_it() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let receiver = Receiver::start(Handshake::Echo).await;
    let data = json!({
        "url": receiver.url, "model": "contact", "fields": "id,etag,name",
        "events": ["created", "updated"], "color": "ignored",
    });
    let created = create(&h.base, token, data).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let webhook = &created.body["data"];
    assert_eq!(webhook["status"], "pending");
    assert_eq!(webhook["url"], receiver.url.as_str());
    assert_eq!(webhook["model"], "contact");
    assert_eq!(webhook["events"], json!(["created", "updated"]));
    assert_eq!(webhook["fields"], "id,etag,name");
    let lifetime = time_of(&webhook["expires_at"]) - Utc::now();
    assert!(
        (TimeDelta::days(3) - lifetime).abs() < TimeDelta::minutes(1),
        "three days by default: {lifetime}"
    );
    let id = webhook["id"].as_i64().unwrap();

    let info = admin
        .wait_for_webhook_status(Region::Us, id, WebhookStatus::Enabled, PATIENCE)
        .await
        .unwrap();
    let echoed = HandshakeOutcome {
        status: Some(200),
        echoed: true,
        error: None,
    };
    assert_eq!(info.handshake, Some(echoed));
    let handshakes = receiver.received();
    assert_eq!(handshakes.len(), 1, "one handshake, nothing else");
    assert_eq!(handshakes[0].json(), json!({"data": {"webhook_id": id}}));
    assert_eq!(handshakes[0].signature, None);

    let path = format!("/api/v4/webhooks/{id}.json");
    let shown = get(
        &h.base,
        token,
        &format!("{path}?fields=status,shared_secret"),
    )
    .await;
    assert_eq!(shown.body["data"]["status"], "enabled");
    assert_eq!(
        shown.body["data"]["shared_secret"].as_str(),
        receiver.secret().as_deref(),
        "the secret of the handshake"
    );
    let plain = get(&h.base, token, &path).await;
    let keys: Vec<&String> = plain.body["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["etag", "id"], "id and etag by default");
    let listed = get(&h.base, token, "/api/v4/webhooks.json?fields=id,status").await;
    assert_eq!(
        listed.body,
        json!({"data": [{"id": id, "status": "enabled"}], "meta": {"paging": {}}})
    );

    let stranger = connect_as(&h.sim, Region::Us, &app_named("other", HOOKS), 1).await;
    let theirs = get(&h.base, &stranger.access, "/api/v4/webhooks.json").await;
    assert_eq!(
        theirs.body["data"],
        json!([]),
        "webhooks belong to their app"
    );
    assert_eq!(
        get(&h.base, &stranger.access, &path).await.status,
        StatusCode::NOT_FOUND
    );

    let deleted = http()
        .delete(format!("{}{path}", h.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&h.base, token, &path).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(admin.webhooks(Region::Us, 1).await.unwrap().is_empty());
}

#[tokio::test]
async fn without_the_echo_the_webhook_waits_for_activate_with_the_secret() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let receiver = Receiver::start(Handshake::Keep).await;
    let data = json!({"url": receiver.url, "model": "contact", "fields": "id,etag"});
    let created = create(&h.base, token, data).await;
    let id = created.body["data"]["id"].as_i64().unwrap();
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let info = admin.webhook(Region::Us, id).await.unwrap();
    assert_eq!(info.status, WebhookStatus::Pending);
    let kept = HandshakeOutcome {
        status: Some(200),
        echoed: false,
        error: None,
    };
    assert_eq!(info.handshake, Some(kept));

    let contact = h.first_id("contacts").await.to_string();
    let rename = |name: &str| json!({ "name": name });
    admin
        .update_record(
            Region::Us,
            Resource::Contacts,
            &contact,
            rename("While pending"),
        )
        .await
        .unwrap();
    let pending = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    assert!(
        pending.is_empty(),
        "a pending webhook delivers nothing: {pending:?}"
    );

    let activate = |secret: String| {
        http()
            .put(format!(
                "{}/api/v4/webhooks/{id}/activate.json?fields=status",
                h.base
            ))
            .bearer_auth(token)
            .header("X-Hook-Secret", secret)
            .send()
    };
    let wrong = activate("guessed".into()).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let right = activate(receiver.secret().unwrap()).await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    let body: Value = right.json().await.unwrap();
    assert_eq!(body["data"]["status"], "enabled");

    admin
        .update_record(Region::Us, Resource::Contacts, &contact, rename("Enabled"))
        .await
        .unwrap();
    receiver
        .wait_until("the first delivery", |_| receiver.taken().len() == 1)
        .await;
    assert_eq!(receiver.taken()[0].event(), "updated");
}

#[tokio::test]
async fn invalid_webhooks_are_422_naming_the_field() {
    let h = hooked().await;
    let token = &h.tokens.access;
    let url = "http://127.0.0.1:9/hook";
    let cases = [
        (
            json!({"model": "contact", "fields": "id"}),
            "url can't be blank",
        ),
        (
            json!({"url": "ftp://hooks.example/h", "model": "contact", "fields": "id"}),
            "url must be an https URL",
        ),
        (
            json!({"url": "http://hooks.example/h", "model": "contact", "fields": "id"}),
            "url must be an https URL",
        ),
        (json!({"url": url, "fields": "id"}), "model can't be blank"),
        (
            json!({"url": url, "model": "invoice", "fields": "id"}),
            "model must be one of",
        ),
        (
            json!({"url": url, "model": "contact"}),
            "fields can't be blank",
        ),
        (
            json!({"url": url, "model": "contact", "fields": "id,shoe_size"}),
            "fields: shoe_size is not a valid field",
        ),
        (
            json!({"url": url, "model": "contact", "fields": "id", "events": ["renamed"]}),
            "events: \"renamed\" is not a webhook event",
        ),
        (
            json!({"url": url, "model": "contact", "fields": "id", "events": ["matter_closed"]}),
            "events: matter_closed is not an event of the contact model",
        ),
        (
            json!({"url": url, "model": "contact", "fields": "id", "expires_at": at(TimeDelta::minutes(-1))}),
            "expires_at must be in the future",
        ),
        (
            json!({"url": url, "model": "contact", "fields": "id", "expires_at": at(TimeDelta::days(32))}),
            "expires_at can be at most 31 days from now",
        ),
    ];
    for (data, message) in cases {
        let answer = create(&h.base, token, data.clone()).await;
        assert_eq!(
            (answer.status, error_type(&answer.body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "ValidationError"),
            "{data}"
        );
        let said = answer.body["error"]["message"].as_str().unwrap();
        assert!(said.starts_with(message), "{data}: {said}");
    }
    let unwrapped = send_json(
        http().post(format!("{}/api/v4/webhooks.json", h.base)),
        token,
        &json!({"url": url}),
    )
    .await;
    assert_eq!(unwrapped.status, StatusCode::BAD_REQUEST);

    let by_number = json!({"url": url, "model": 6, "fields": "id", "expires_at": at(TimeDelta::days(31) - TimeDelta::minutes(1))});
    let created = create(&h.base, token, by_number).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["data"]["model"], "contact");
    assert_eq!(
        created.body["data"]["events"],
        json!(["created", "updated", "deleted"])
    );
}

#[tokio::test]
async fn clio_takes_https_only_unless_loopback_http_is_switched_on() {
    let h = hooked_with(SimConfig {
        webhooks: WebhookConfig::default(),
        ..config()
    })
    .await;
    let token = &h.tokens.access;
    let http_hook = json!({"url": "http://127.0.0.1:9/hook", "model": "contact", "fields": "id"});
    let refused = create(&h.base, token, http_hook).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing listens on port 1: the handshake cannot be delivered.
    let https_hook = json!({"url": "https://127.0.0.1:1/hook", "model": "contact", "fields": "id"});
    let created = create(&h.base, token, https_hook).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["data"]["id"].as_i64().unwrap();
    let admin = h.sim.admin();
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let info = admin.webhook(Region::Us, id).await.unwrap();
    assert_eq!(info.status, WebhookStatus::Pending);
    let unreachable = HandshakeOutcome {
        status: None,
        echoed: false,
        error: Some("could not connect".into()),
    };
    assert_eq!(info.handshake, Some(unreachable));
}

#[tokio::test]
async fn webhooks_need_the_webhooks_permission_and_read_access_to_the_model() {
    let sim = start_with(config()).await;
    let base = sim.base_url(Region::Us);
    let hook = |model: &str| json!({"url": "http://127.0.0.1:9/h", "model": model, "fields": "id"});
    let forbidden = |answer: &Answer, permission: &str| {
        assert_eq!(
            (answer.status, error_type(&answer.body)),
            (StatusCode::FORBIDDEN, "ForbiddenError"),
            "{}",
            answer.body
        );
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(permission), "{message}");
    };

    let plain = connect(&sim, Region::Us, &["contacts:read"]).await;
    forbidden(
        &get(&base, &plain.access, "/api/v4/webhooks.json").await,
        "webhooks:read",
    );
    forbidden(
        &create(&base, &plain.access, hook("contact")).await,
        "webhooks:write",
    );

    let reader = app_named("reader", &["webhooks:read", "contacts:read"]);
    let reader = connect_as(&sim, Region::Us, &reader, 1).await;
    let listed = get(&base, &reader.access, "/api/v4/webhooks.json").await;
    assert_eq!(listed.status, StatusCode::OK);
    forbidden(
        &create(&base, &reader.access, hook("contact")).await,
        "webhooks:write",
    );

    let writer = app_named("writer", &["webhooks:write", "matters:read"]);
    let writer = connect_as(&sim, Region::Us, &writer, 1).await;
    forbidden(
        &create(&base, &writer.access, hook("contact")).await,
        "contacts:read",
    );
    forbidden(
        &create(&base, &writer.access, hook("calendar_entry")).await,
        "calendar:read",
    );
    let matter = create(&base, &writer.access, hook("matter")).await;
    assert_eq!(matter.status, StatusCode::CREATED, "{}", matter.body);
    let id = matter.body["data"]["id"].as_i64().unwrap();
    forbidden(
        &update(&base, &writer.access, id, json!({"model": "activity"})).await,
        "activities:read",
    );
}

#[tokio::test]
async fn webhooks_expire_on_the_simulated_clock_unless_renewed() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let (short_receiver, renewed_receiver) = (
        Receiver::start(Handshake::Echo).await,
        Receiver::start(Handshake::Echo).await,
    );
    let short = h
        .subscribe_with(json!({
            "url": short_receiver.url, "model": "contact", "fields": "id,etag",
            "expires_at": at(TimeDelta::days(1)),
        }))
        .await;
    let renewed = h.subscribe(&renewed_receiver, "contact", "id,etag").await;
    let later = at(TimeDelta::days(20));
    let patched = update(&h.base, token, renewed, json!({"expires_at": later})).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        time_of(&patched.body["data"]["expires_at"]).timestamp(),
        time_of(&json!(later)).timestamp()
    );
    let too_far = update(
        &h.base,
        token,
        renewed,
        json!({"expires_at": at(TimeDelta::days(32))}),
    );
    assert_eq!(too_far.await.status, StatusCode::UNPROCESSABLE_ENTITY);

    admin
        .advance_clock(Duration::from_secs(2 * 24 * 3600))
        .await
        .unwrap();
    let contact = h.first_id("contacts").await.to_string();
    rename_contact(&admin, &contact, "Two days on").await;
    let deliveries = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let heard: Vec<i64> = deliveries
        .iter()
        .map(|delivery| delivery.webhook_id)
        .collect();
    assert_eq!(heard, [renewed], "the expired webhook hears nothing");
    assert_eq!(renewed_receiver.taken().len(), 1);
    assert!(short_receiver.deliveries().is_empty());

    let path = format!("/api/v4/webhooks/{short}.json");
    assert_eq!(
        get(&h.base, token, &path).await.status,
        StatusCode::NOT_FOUND
    );
    let revive = update(
        &h.base,
        token,
        short,
        json!({"expires_at": at(TimeDelta::days(10))}),
    );
    assert_eq!(
        revive.await.status,
        StatusCode::NOT_FOUND,
        "gone, not renewable"
    );
    let listed = get(&h.base, token, "/api/v4/webhooks.json").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert!(admin.webhook(Region::Us, short).await.unwrap().expired);
    assert!(!admin.webhook(Region::Us, renewed).await.unwrap().expired);
}

#[tokio::test]
async fn listed_expired_webhooks_show_their_past_expiry_and_a_renewal_revives_them() {
    let h = hooked_with(SimConfig {
        webhooks: WebhookConfig {
            expired: ExpiredWebhooks::Listed,
            ..config().webhooks
        },
        ..config()
    })
    .await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let receiver = Receiver::start(Handshake::Echo).await;
    let id = h.subscribe(&receiver, "contact", "id,etag,name").await;
    admin
        .advance_clock(Duration::from_secs(4 * 24 * 3600))
        .await
        .unwrap();
    let shown = get(
        &h.base,
        token,
        &format!("/api/v4/webhooks/{id}.json?fields=status,expires_at"),
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(time_of(&shown.body["data"]["expires_at"]) < Utc::now() + TimeDelta::days(4));
    let contact = h.first_id("contacts").await.to_string();
    let rename = |name: &str| json!({ "name": name });
    admin
        .update_record(Region::Us, Resource::Contacts, &contact, rename("Expired"))
        .await
        .unwrap();
    assert!(
        admin
            .settle_webhooks(Region::Us, PATIENCE)
            .await
            .unwrap()
            .is_empty()
    );

    let renewal = json!({"expires_at": at(TimeDelta::days(4 + 10))});
    assert_eq!(
        update(&h.base, token, id, renewal).await.status,
        StatusCode::OK
    );
    admin
        .update_record(Region::Us, Resource::Contacts, &contact, rename("Renewed"))
        .await
        .unwrap();
    receiver
        .wait_until("the renewed webhook's delivery", |_| {
            receiver.taken().len() == 1
        })
        .await;
    assert_eq!(receiver.taken()[0].json()["data"]["name"], "Renewed");
}

#[tokio::test]
async fn webhook_calls_are_counted_and_rate_limited_but_deliveries_are_not() {
    let h = hooked_with(SimConfig {
        rate_limit: Some(RateLimit {
            limit: 3,
            window: Duration::from_secs(60),
        }),
        ..config()
    })
    .await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let receiver = Receiver::start(Handshake::Echo).await;
    let id = h.subscribe(&receiver, "contact", "id,etag").await;
    let one = format!("/api/v4/webhooks/{id}");
    assert_eq!(
        get(&h.base, token, "/api/v4/webhooks").await.status,
        StatusCode::OK
    );
    assert_eq!(get(&h.base, token, &one).await.status, StatusCode::OK);
    let over = get(&h.base, token, &one).await;
    assert_eq!(
        (over.status, error_type(&over.body)),
        (StatusCode::TOO_MANY_REQUESTS, "RateLimited")
    );
    assert!(over.header("retry-after").is_some());

    admin.reset_rate_limits(Region::Us).await.unwrap();
    let contact = get(&h.base, token, "/api/v4/contacts.json?limit=1")
        .await
        .body["data"][0]["id"]
        .to_string();
    rename_contact(&admin, &contact, "N").await;
    receiver
        .wait_until("the delivery", |_| receiver.taken().len() == 1)
        .await;
    let calls = admin.calls().await.unwrap();
    assert_eq!(calls.api_calls_on(token, "/api/v4/webhooks"), 2);
    assert_eq!(calls.api_calls_on(token, "/api/v4/webhooks/{id}"), 2);
    assert_eq!(calls.status_429_for(token), 1);
    assert_eq!(
        calls.total_api_calls(),
        5,
        "four webhook calls and one listing: deliveries are not API calls"
    );
}
