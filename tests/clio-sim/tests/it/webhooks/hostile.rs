//! Hostile deliveries on demand, for tests of a receiver: forgeries without or with a
//! wrong signature, duplicates, replays, reordering and raw bodies.

use clio_sim::{DeliveryKind, DeliveryState, Region};

use super::receiver::{Handshake, Received, Receiver, hmac_hex};
use super::*;

/// The names in what the receiver got, in arrival order.
fn names(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|delivery| delivery.json()["data"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A subscription of a fresh receiver to contacts (`id,etag,name`), and a contact id.
async fn watching_a_contact(h: &Hooked) -> (Receiver, i64, String) {
    let receiver = Receiver::start(Handshake::Echo).await;
    let id = h.subscribe(&receiver, "contact", "id,etag,name").await;
    let contact = h.first_id("contacts").await.to_string();
    (receiver, id, contact)
}

async fn rename(h: &Hooked, contact: &str, name: &str) {
    rename_contact(&h.sim.admin(), contact, name).await;
}

#[tokio::test]
async fn forgeries_arrive_just_before_the_genuine_delivery_and_fail_verification() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let (receiver, _, contact) = watching_a_contact(&h).await;
    admin.forge_unsigned_webhooks(Region::Us, 1).await.unwrap();
    admin
        .forge_badly_signed_webhooks(Region::Us, 1)
        .await
        .unwrap();
    for name in ["A", "B", "C"] {
        rename(&h, &contact, name).await;
    }
    let deliveries = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();

    let got = receiver.deliveries();
    assert_eq!(names(&got), ["A", "A", "B", "B", "C"]);
    assert_eq!(got[0].signature, None, "unsigned");
    assert!(!got[0].verified && got[0].answered == 401);
    let secret = receiver.secret().unwrap();
    let wrong = got[2].signature.as_deref().unwrap();
    assert_ne!(wrong, hmac_hex(&secret, got[2].body.as_bytes()));
    assert!(!got[2].verified && got[2].answered == 401);
    assert_eq!(
        (got[0].body.as_str(), got[2].body.as_str()),
        (got[1].body.as_str(), got[3].body.as_str())
    );
    assert_eq!(names(&receiver.taken()), ["A", "B", "C"]);

    let kinds: Vec<DeliveryKind> = deliveries.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == DeliveryKind::Event).count(),
        3
    );
    for forged in deliveries.iter().filter(|d| d.kind != DeliveryKind::Event) {
        assert_eq!(forged.statuses(), [Some(401)], "sent once, not retried");
        let genuine = deliveries
            .iter()
            .find(|d| Some(d.id) == forged.copy_of)
            .unwrap();
        assert_eq!(
            (genuine.kind, &genuine.body),
            (DeliveryKind::Event, &forged.body)
        );
    }
    let forged: Vec<DeliveryKind> = kinds
        .into_iter()
        .filter(|k| *k != DeliveryKind::Event)
        .collect();
    assert_eq!(forged, [DeliveryKind::Unsigned, DeliveryKind::BadSignature]);
}

#[tokio::test]
async fn duplicates_and_replays_repeat_the_exact_bytes_and_signature() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let (receiver, id, contact) = watching_a_contact(&h).await;
    admin.duplicate_webhooks(Region::Us, 1).await.unwrap();
    rename(&h, &contact, "A").await;
    rename(&h, &contact, "B").await;
    let deliveries = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let got = receiver.taken();
    assert_eq!(names(&got), ["A", "A", "B"], "both copies verify");
    assert_eq!(
        (&got[0].body, &got[0].signature),
        (&got[1].body, &got[1].signature)
    );

    let first = deliveries
        .iter()
        .find(|d| d.kind == DeliveryKind::Event)
        .unwrap();
    let replay = admin
        .replay_webhook_delivery(Region::Us, first.id)
        .await
        .unwrap();
    receiver
        .wait_until("the replay", |_| receiver.taken().len() == 4)
        .await;
    let replayed = &receiver.taken()[3];
    assert_eq!(
        (&replayed.body, &replayed.signature),
        (&got[0].body, &got[0].signature)
    );
    let shown = admin
        .webhook_deliveries(Region::Us, Some(id))
        .await
        .unwrap();
    let replay = shown.iter().find(|d| d.id == replay).unwrap();
    assert_eq!(
        (replay.kind, replay.copy_of),
        (DeliveryKind::Replay, Some(first.id))
    );
}

#[tokio::test]
async fn a_held_update_arrives_after_the_newer_one() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let (receiver, id, contact) = watching_a_contact(&h).await;
    admin.reorder_webhooks(Region::Us, 1).await.unwrap();
    rename(&h, &contact, "Older").await;
    let held = admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    assert_eq!(held[0].state, DeliveryState::Held);
    assert!(receiver.deliveries().is_empty());

    rename(&h, &contact, "Newer").await;
    admin.settle_webhooks(Region::Us, PATIENCE).await.unwrap();
    let got = receiver.taken();
    assert_eq!(names(&got), ["Newer", "Older"]);
    let etag = |delivery: &Received| delivery.json()["data"]["etag"].clone();
    assert_ne!(etag(&got[0]), etag(&got[1]));
    let shown = admin
        .webhook_deliveries(Region::Us, Some(id))
        .await
        .unwrap();
    assert!(shown.iter().all(|d| d.state == DeliveryState::Delivered));
}

#[tokio::test]
async fn a_raw_body_goes_out_as_it_is_and_correctly_signed() {
    let h = hooked().await;
    let admin = h.sim.admin();
    let (receiver, id, _) = watching_a_contact(&h).await;
    let text =
        r#"{"data":{"id":"\ud800","name":"a\u0000b"},"meta":{"event":"updated","webhook_id":1}}"#;
    admin
        .deliver_raw_webhook(Region::Us, id, text)
        .await
        .unwrap();
    receiver
        .wait_until("the raw body", |_| receiver.deliveries().len() == 1)
        .await;
    let got = &receiver.deliveries()[0];
    assert_eq!(got.body, text);
    assert!(got.verified);
    let secret = receiver.secret().unwrap();
    assert_eq!(
        got.signature.as_deref(),
        Some(hmac_hex(&secret, text.as_bytes()).as_str())
    );
}
