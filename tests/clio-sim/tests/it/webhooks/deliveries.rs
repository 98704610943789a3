//! Deliveries: what changes fire which events, the payload and its signature, order,
//! retries, suspension, unreachable receivers, and who hears nothing.

use std::collections::BTreeSet;
use std::process::Stdio;

use clio_sim::{
    AdminClient, Decision, DeliveryKind, DeliveryState, Region, Resource, SimConfig, WebhookStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::receiver::{Handshake, Receiver, hmac_hex};
use super::*;

fn names(received: &[receiver::Received]) -> Vec<String> {
    received
        .iter()
        .map(|delivery| delivery.json()["data"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn api_and_admin_changes_are_delivered_signed_and_in_order() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let receiver = Receiver::start(Handshake::Echo).await;
    let id = h.subscribe(&receiver, "activity", "id,etag,note").await;

    let matter = h.first_id("matters").await;
    let me = get(&h.base, token, "/api/v4/users/who_am_i.json")
        .await
        .body["data"]["id"]
        .clone();
    let entry = json!({"data": {
        "type": "TimeEntry", "date": "2026-06-09", "quantity": 3600,
        "matter": {"id": matter}, "user": {"id": me}, "note": "first",
    }});
    let created = send_json(
        http().post(format!("{}/api/v4/activities.json", h.base)),
        token,
        &entry,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let activity = created.body["data"]["id"].clone();
    let patched = h
        .patch("activities", &activity, json!({"note": "second"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let key = activity.to_string();
    admin
        .update_record(
            Region::Us,
            Resource::Activities,
            &key,
            json!({"note": "third"}),
        )
        .await
        .unwrap();
    admin
        .delete_record(Region::Us, Resource::Activities, &key)
        .await
        .unwrap();
    let made = admin
        .create_record(
            Region::Us,
            Resource::Activities,
            json!({"type": "TimeEntry", "note": "fifth"}),
        )
        .await
        .unwrap();

    // Settled: every answer is on file (the receiver sees a delivery before the
    // simulator has its answer).
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let taken = receiver.taken();
    assert_eq!(taken.len(), 5);
    assert_eq!(
        receiver.deliveries().len(),
        5,
        "nothing refused, nothing retried"
    );
    let events: Vec<String> = taken.iter().map(receiver::Received::event).collect();
    assert_eq!(
        events,
        ["created", "updated", "updated", "deleted", "created"]
    );
    let secret = receiver.secret().unwrap();
    let mut etags = Vec::new();
    for (delivery, note) in taken
        .iter()
        .zip(["first", "second", "third", "third", "fifth"])
    {
        let body = delivery.json();
        assert_eq!(
            delivery.signature.as_deref(),
            Some(hmac_hex(&secret, delivery.body.as_bytes()).as_str()),
            "hex HMAC-SHA256 of the raw body"
        );
        assert_eq!(
            body["meta"],
            json!({"event": delivery.event(), "webhook_id": id})
        );
        let fields: BTreeSet<&String> = body["data"].as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            BTreeSet::from([&"etag".into(), &"id".into(), &"note".into()])
        );
        assert_eq!(body["data"]["note"], note);
        etags.push(body["data"]["etag"].clone());
    }
    let ids: Vec<Value> = taken
        .iter()
        .map(|d| d.json()["data"]["id"].clone())
        .collect();
    assert!(ids[..4].iter().all(|one| *one == activity), "{ids:?}");
    assert_eq!(ids[4], serde_json::to_value(&made).unwrap());
    assert!(
        etags[0] != etags[1] && etags[1] != etags[2],
        "every update a new etag"
    );
    assert_eq!(etags[3], etags[2], "a deletion carries the last version");

    let deliveries = admin
        .webhook_deliveries(Region::Us, Some(id))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 5);
    for (delivery, received) in deliveries.iter().zip(&taken) {
        assert_eq!(delivery.kind, DeliveryKind::Event);
        assert_eq!(delivery.state, DeliveryState::Delivered);
        assert_eq!(delivery.statuses(), [Some(200)]);
        assert_eq!(delivery.body, received.body);
        assert_eq!(delivery.signature, received.signature);
    }
}

#[tokio::test]
async fn updates_fire_when_a_watched_field_changes_and_matters_announce_their_status() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let receiver = Receiver::start(Handshake::Echo).await;
    h.subscribe_with(json!({
        "url": receiver.url, "model": "matter", "fields": "id,status",
        "events": ["updated", "matter_opened", "matter_closed"],
    }))
    .await;
    let matter = h.first_id("matters").await.to_string();
    for change in [
        // A record's first update since enabling always fires (pended: not subscribed).
        json!({"status": "Pending"}),
        // Later ones only when a watched field (`fields`) changed.
        json!({"description": "Unwatched"}),
        json!({"status": "Closed"}),
        json!({"status": "Open", "description": "Reopened"}),
    ] {
        admin
            .update_record(Region::Us, Resource::Matters, &matter, change)
            .await
            .unwrap();
    }
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let taken = receiver.taken();
    let events: Vec<String> = taken.iter().map(receiver::Received::event).collect();
    assert_eq!(
        events,
        [
            "updated",
            "updated",
            "matter_closed",
            "updated",
            "matter_opened"
        ]
    );
    let statuses: Vec<Value> = taken
        .iter()
        .map(|d| d.json()["data"]["status"].clone())
        .collect();
    assert_eq!(statuses, ["Pending", "Closed", "Closed", "Open", "Open"]);
}

#[tokio::test]
async fn a_refused_delivery_is_retried_with_backoff_and_later_ones_wait_their_turn() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let receiver = Receiver::start(Handshake::Echo).await;
    let id = h.subscribe(&receiver, "contact", "id,etag,name").await;
    receiver.answer_next(&[500, 503]);
    let contact = h.first_id("contacts").await.to_string();
    for name in ["A", "B"] {
        rename_contact(&admin, &contact, name).await;
    }
    let deliveries = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].statuses(), [Some(500), Some(503), Some(200)]);
    assert_eq!(deliveries[1].statuses(), [Some(200)]);
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered)
    );
    let at: Vec<_> = deliveries[0]
        .attempts
        .iter()
        .map(|attempt| attempt.at)
        .collect();
    assert!(
        at[1] - at[0] >= chrono::TimeDelta::milliseconds(20),
        "{at:?}"
    );
    assert!(
        at[2] - at[1] >= chrono::TimeDelta::milliseconds(40),
        "{at:?}"
    );
    assert_eq!(
        names(&receiver.deliveries()),
        ["A", "A", "A", "B"],
        "in order"
    );
    let info = admin.webhook(Region::Us, id).await.unwrap();
    assert_eq!(
        (info.status, info.consecutive_failures),
        (WebhookStatus::Enabled, 0)
    );
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_gets_its_webhook_suspended() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let token = &h.tokens.access;
    let receiver = Receiver::start(Handshake::Echo).await;
    let id = h.subscribe(&receiver, "contact", "id,etag,name").await;
    let contact = h.first_id("contacts").await.to_string();
    let rename = |name: &'static str| {
        let admin = admin.clone();
        let contact = contact.clone();
        async move {
            rename_contact(&admin, &contact, name).await;
            admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap()
        }
    };
    receiver.answer_next(&[500; 6]);
    rename("A").await;
    let deliveries = rename("B").await;
    for delivery in &deliveries {
        assert_eq!(delivery.statuses(), [Some(500); 3]);
        assert_eq!(delivery.state, DeliveryState::Failed);
        assert_eq!(delivery.failure.as_deref(), Some("every attempt failed"));
    }
    let status = format!("/api/v4/webhooks/{id}.json?fields=status");
    assert_eq!(
        get(&h.base, token, &status).await.body["data"]["status"],
        "suspended"
    );
    assert_eq!(
        rename("C").await.len(),
        2,
        "a suspended webhook delivers nothing"
    );

    let activated = http()
        .put(format!("{}/api/v4/webhooks/{id}/activate", h.base))
        .bearer_auth(token)
        .header("X-Hook-Secret", receiver.secret().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(activated.status(), StatusCode::OK);
    assert_eq!(rename("D").await.last().unwrap().statuses(), [Some(200)]);

    receiver.answer_next(&[410]);
    let gone = rename("E").await;
    let last = gone.last().unwrap();
    assert_eq!(last.statuses(), [Some(410)], "410 is not retried");
    assert_eq!(
        last.failure.as_deref(),
        Some("the receiver answered 410 Gone")
    );
    let info = admin.webhook(Region::Us, id).await.unwrap();
    assert_eq!(info.status, WebhookStatus::Suspended);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_then_given_up_without_holding_up_edits() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let receiver = Receiver::start(Handshake::Echo).await;
    h.subscribe(&receiver, "contact", "id,etag").await;
    receiver.stop().await;
    let contact = h.first_id("contacts").await.to_string();
    rename_contact(&admin, &contact, "Nobody home").await;
    let deliveries = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let delivery = &deliveries[0];
    assert_eq!(delivery.statuses(), [None, None, None]);
    assert_eq!(
        delivery.attempts[0].error.as_deref(),
        Some("could not connect")
    );
    assert_eq!(delivery.state, DeliveryState::Failed);
}

#[tokio::test]
async fn only_the_subscribers_account_and_records_its_user_may_see_are_delivered() {
    let h = hooked_with(SimConfig {
        accounts: 2,
        ..config()
    })
    .await;
    let admin = h.sim.admin();
    let receiver = Receiver::start(Handshake::Echo).await;
    h.subscribe(&receiver, "contact", "id,etag").await;

    let elsewhere = connect_in_account(&h.sim, Region::Us, &app(HOOKS), 2, 1).await;
    let theirs = get(&h.base, &elsewhere.access, "/api/v4/contacts.json?limit=1").await;
    let their_contact = theirs.body["data"][0]["id"].clone();
    let url = format!("{}/api/v4/contacts/{their_contact}.json", h.base);
    let patched = send_json(
        http().patch(url),
        &elsewhere.access,
        &json!({"data": {"name": "X"}}),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);

    let ours = get(&h.base, &h.tokens.access, "/api/v4/contacts.json?limit=2").await;
    let (hidden, visible) = (
        ours.body["data"][0]["id"].to_string(),
        ours.body["data"][1]["id"].to_string(),
    );
    admin
        .hide_records(Region::Us, 1, Resource::Contacts, &[&hidden])
        .await
        .unwrap();
    for contact in [&hidden, &visible] {
        rename_contact(&admin, contact, "Y").await;
    }
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let taken = receiver.taken();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].json()["data"]["id"].to_string(), visible);

    assert!(
        admin
            .revoke_grants_of(Region::Us, CLIENT_ID, 1)
            .await
            .unwrap()
            >= 1
    );
    rename_contact(&admin, &visible, "Z").await;
    let after = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    assert_eq!(after.len(), 1, "a disconnected user's webhooks fall silent");
}

/// Runs the binary with every log on (`RUST_LOG=trace`), drives a handshake and a
/// delivery through it, and reads everything it wrote: the shared secret (and the access
/// token) must not be in it. A process of its own, so no other test's logging interferes.
#[tokio::test]
async fn shared_secrets_never_reach_the_logs() {
    let dir = std::env::temp_dir().join(format!("clio-sim-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let apps = dir.join("apps.json");
    let mut spec = serde_json::to_value(app(HOOKS)).unwrap();
    spec["region"] = json!("us");
    std::fs::write(&apps, json!([spec]).to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clio-sim"))
        .args(["--regions", "us", "--size", "10", "--rate-limit", "off"])
        .args(["--webhooks-allow-http", "--webhook-retry-delays-ms", "10"])
        .arg("--apps")
        .arg(&apps)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut logs = String::new();
    let base = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the binary printed its address");
        if let Some(url) = line.strip_prefix("region=us url=") {
            break url.to_owned();
        }
        logs.push_str(&line);
    };
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            logs.push_str(&line);
            logs.push('\n');
        }
        logs
    });

    let admin = AdminClient::new([(Region::Us, base.clone())].into());
    let consent = admin
        .consent(
            &authorize_url(&base, CLIENT_ID, REDIRECT, "s"),
            1,
            Decision::Allow,
        )
        .await
        .unwrap();
    let code = consent.code.unwrap();
    let (_, tokens) = token_request(
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let receiver = Receiver::start(Handshake::Echo).await;
    let data = json!({"url": receiver.url, "model": "contact", "fields": "id,etag"});
    let created = create(&base, &access, data).await;
    let id = created.body["data"]["id"].as_i64().unwrap();
    admin
        .wait_for_webhook_status(Region::Us, id, WebhookStatus::Enabled, PATIENCE)
        .await
        .unwrap();
    let contact = get(&base, &access, "/api/v4/contacts.json?limit=1")
        .await
        .body["data"][0]["id"]
        .to_string();
    rename_contact(&admin, &contact, "Logged").await;
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    assert_eq!(receiver.taken().len(), 1);
    let secret = receiver.secret().unwrap();
    let shown = format!(
        "{:?}{:?}",
        admin.webhooks(Region::Us, 1).await.unwrap(),
        admin
            .webhook_deliveries(Region::Us, Some(id))
            .await
            .unwrap()
    );
    assert!(!shown.contains(&secret), "the admin API shows the secret");

    child.kill().await.unwrap();
    let logs = reader.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        logs.contains("webhook handshake answered"),
        "logs are captured: {logs}"
    );
    assert!(logs.contains("webhook delivery attempted"));
    assert!(!logs.contains(&secret), "the shared secret was logged");
    assert!(!logs.contains(&access), "the access token was logged");
}
