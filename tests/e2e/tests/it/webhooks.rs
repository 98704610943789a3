//! Near-real-time sync through Clio's webhooks, end to end: the simulator delivers signed
//! changes to import-svc's receiver over HTTP, and the records are in Postgres without any
//! import; hostile requests are refused and audited; subscriptions are renewed before they
//! expire on the simulator's clock; a receiver outage is closed by an incremental import;
//! a revoked connection loses its subscriptions.

use std::time::{Duration, Instant};

use clio_sim::{DatasetSize, DeliveryKind, Region, Resource, SimConfig, WebhookConfig};
use harness::{poll_until, token_of, with_bearer};
use proto::auth::v1 as auth;
use proto::common::v1::EventKind;
use proto::imports::v1 as import;
use secrecy::SecretString;

use crate::stack::{Stack, StackSetup};

const PERSON: &str = "pat@firm-1";
const SCOPES: &[&str] = &["contacts:read", "webhooks:write"];
/// `webhooks.secret_key` of the tests (32 bytes, base64).
const SEALING_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A port free now, for a receiver that must keep its address across a restart.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The stack with import-svc's receiver on a fixed loopback port and a simulator that
/// delivers to plain HTTP there, retrying after `retry_delay`.
async fn webhook_stack(test: &str, retry_delay: Duration) -> Stack {
    webhook_stack_with(test, retry_delay, false).await
}

/// [`webhook_stack`], with import-svc's database behind a proxy the test can cut.
async fn webhook_stack_with(test: &str, retry_delay: Duration, db_proxy: bool) -> Stack {
    let port = free_port();
    let setup = StackSetup {
        sim: SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            dataset: DatasetSize {
                contacts: 10,
                ..DatasetSize::default()
            },
            webhooks: WebhookConfig {
                allow_http: true,
                retry_delays: vec![retry_delay; 3],
                ..WebhookConfig::default()
            },
            ..SimConfig::default()
        },
        import: Box::new(move |config| {
            config.webhooks = import_svc::webhooks::WebhooksConfig {
                listen: Some(format!("127.0.0.1:{port}")),
                secret_key: Some(SecretString::from(SEALING_KEY)),
                lifetime_days: 3,
                renew_before_secs: 86_400,
                upkeep_interval_ms: 200,
                verify_interval_secs: 1,
                ..import_svc::webhooks::WebhooksConfig::default()
            };
        }),
        import_db_proxy: db_proxy,
        ..StackSetup::default()
    };
    Stack::start(test, setup).await
}

async fn enable(stack: &Stack, connection: &str) -> import::WebhookSubscription {
    let answer = stack
        .import()
        .await
        .enable_webhooks(with_bearer(
            import::EnableWebhooksRequest {
                connection_id: connection.into(),
                resources: vec!["contacts".into()],
            },
            &token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.subscriptions.len(), 1, "{answer:?}");
    enabled(stack, connection).await
}

async fn subscriptions(stack: &Stack, connection: &str) -> Vec<import::WebhookSubscription> {
    stack
        .import()
        .await
        .list_webhooks(with_bearer(
            import::ListWebhooksRequest {
                connection_id: connection.into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner()
        .subscriptions
}

/// The connection's live contacts subscription once Clio's handshake enabled it.
async fn enabled(stack: &Stack, connection: &str) -> import::WebhookSubscription {
    poll_until(
        "the subscription to be enabled by Clio's handshake",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            subscriptions(stack, connection)
                .await
                .into_iter()
                .find(|s| s.status == import::WebhookStatus::Enabled as i32)
        },
    )
    .await
}

/// The stored contact's name, `None` while it is not stored or is marked deleted.
async fn stored_name(stack: &Stack, id: i64) -> Option<String> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_scalar(
        "SELECT data->>'name' FROM contacts WHERE clio_id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(&mut db)
    .await
    .unwrap()
    .flatten()
}

async fn rename(stack: &Stack, id: i64, name: &str) {
    stack
        .sim
        .admin()
        .update_record(
            Region::Us,
            Resource::Contacts,
            &id.to_string(),
            serde_json::json!({ "name": name }),
        )
        .await
        .unwrap();
}

/// Waits until the stored contact is named `name`; returns how long it took.
async fn stored_as(stack: &Stack, id: i64, name: &str, within: Duration) -> Duration {
    let started = Instant::now();
    poll_until(
        &format!("contact {id} stored as {name:?}"),
        within,
        Duration::from_millis(10),
        || async { (stored_name(stack, id).await.as_deref() == Some(name)).then_some(()) },
    )
    .await;
    started.elapsed()
}

fn contact_id(id: clio_sim::RecordId) -> i64 {
    match id {
        clio_sim::RecordId::Int(id) => id,
        other => panic!("contact ids are numbers, not {other:?}"),
    }
}

/// A connection subscribed to its contacts, and a contact named `name` made at Clio and
/// stored through the subscription: the connection, the subscription and the contact's id.
async fn subscribed_with_contact(
    stack: &Stack,
    name: &str,
) -> (String, import::WebhookSubscription, i64) {
    let connection = stack.connect(SCOPES, PERSON, 1).await;
    let subscription = enable(stack, &connection).await;
    let id = contact_id(stack.create_contact(name).await);
    stored_as(stack, id, name, Duration::from_secs(5)).await;
    (connection, subscription, id)
}

/// Waits (up to 20 s) until some delivery at the simulator is as `seen` wants.
async fn until_delivery(
    stack: &Stack,
    what: &str,
    seen: impl Fn(&clio_sim::WebhookDelivery) -> bool,
) {
    let admin = stack.sim.admin();
    poll_until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let deliveries = admin.webhook_deliveries(Region::Us, None).await.ok()?;
            deliveries.iter().any(&seen).then_some(())
        },
    )
    .await;
}

/// Every delivery, once the simulator has none in flight.
async fn settle(stack: &Stack) -> Vec<clio_sim::WebhookDelivery> {
    stack
        .sim
        .admin()
        .settle_webhooks(Region::Us, Duration::from_secs(10))
        .await
        .unwrap()
}

/// List requests for contacts the simulator answered: an import reads them, a webhook
/// does not.
async fn contact_listings(stack: &Stack) -> u64 {
    let calls = stack.sim.admin().calls().await.unwrap();
    calls
        .api
        .iter()
        .filter(|c| c.method == "GET" && c.endpoint == "/api/v4/contacts")
        .map(|c| c.count)
        .sum()
}

/// The tenant's audit events of `kind` once at least `count` reached audit-svc (they are
/// relayed from import-svc's outbox).
async fn audited(
    stack: &Stack,
    kind: EventKind,
    count: usize,
) -> Vec<proto::common::v1::AuditEvent> {
    poll_until(
        &format!("{count} {kind:?} events audited"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let events = stack.audit_events("firm-1", &[kind]).await;
            (events.len() >= count).then_some(events)
        },
    )
    .await
}

async fn jobs_of(stack: &Stack, connection: &str) -> Vec<import::Job> {
    stack
        .import()
        .await
        .list_jobs(with_bearer(
            import::ListJobsRequest {
                connection_id: connection.into(),
                ..Default::default()
            },
            &token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_at_clio_is_stored_within_two_seconds_through_a_webhook_without_polling() {
    let stack = webhook_stack("webhook_sync", Duration::from_millis(200)).await;
    let connection = stack.connect(SCOPES, PERSON, 1).await;
    let subscription = enable(&stack, &connection).await;
    assert!(subscription.clio_webhook_id > 0);

    let id = contact_id(stack.create_contact("Ada Created").await);
    let created = stored_as(&stack, id, "Ada Created", Duration::from_secs(2)).await;
    rename(&stack, id, "Ada Renamed").await;
    let updated = stored_as(&stack, id, "Ada Renamed", Duration::from_secs(2)).await;
    stack.delete_contact(id).await;
    poll_until(
        "the deleted contact marked deleted",
        Duration::from_secs(2),
        Duration::from_millis(10),
        || async { stored_name(&stack, id).await.is_none().then_some(()) },
    )
    .await;
    println!(
        "created stored after {} ms, update after {} ms",
        created.as_millis(),
        updated.as_millis()
    );

    assert_eq!(
        contact_listings(&stack).await,
        0,
        "something listed contacts"
    );
    assert!(
        jobs_of(&stack, &connection).await.is_empty(),
        "an import ran"
    );
    let applied = subscriptions(&stack, &connection).await[0].deliveries_applied;
    assert_eq!(applied, 3, "created, updated, deleted");

    let subscribed = audited(&stack, EventKind::WebhookSubscribed, 1).await;
    assert_eq!(subscribed.len(), 1, "{subscribed:?}");
    assert_eq!(subscribed[0].actor.as_ref().unwrap().id, "operator");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_unsigned_replayed_and_second_handshake_requests_are_refused_and_audited() {
    let stack = webhook_stack("webhook_hostile", Duration::from_millis(200)).await;
    let connection = stack.connect(SCOPES, PERSON, 1).await;
    enable(&stack, &connection).await;
    let admin = stack.sim.admin();
    let info = admin.webhooks(Region::Us, 1).await.unwrap().remove(0);

    // Clio's next delivery is preceded by an unsigned copy, the one after by a wrongly
    // signed copy.
    admin.forge_unsigned_webhooks(Region::Us, 1).await.unwrap();
    let id = contact_id(stack.create_contact("Genuine").await);
    stored_as(&stack, id, "Genuine", Duration::from_secs(5)).await;
    settle(&stack).await;
    admin
        .forge_badly_signed_webhooks(Region::Us, 1)
        .await
        .unwrap();
    rename(&stack, id, "Newer").await;
    stored_as(&stack, id, "Newer", Duration::from_secs(5)).await;
    let deliveries = settle(&stack).await;
    let status_of = |kind: DeliveryKind| {
        deliveries
            .iter()
            .find(|d| d.kind == kind)
            .and_then(|d| d.attempts.first())
            .and_then(|a| a.status)
    };
    assert_eq!(
        status_of(DeliveryKind::Unsigned),
        Some(401),
        "{deliveries:#?}"
    );
    assert_eq!(
        status_of(DeliveryKind::BadSignature),
        Some(401),
        "{deliveries:#?}"
    );
    assert_eq!(status_of(DeliveryKind::Event), Some(200));

    // The first genuine delivery again, byte for byte: refused, and "Genuine" stays old.
    let genuine = deliveries
        .iter()
        .find(|d| d.kind == DeliveryKind::Event)
        .unwrap();
    admin
        .replay_webhook_delivery(Region::Us, genuine.id)
        .await
        .unwrap();

    // An attacker who knows the URL: a forged change, and a second handshake.
    let http = reqwest::Client::new();
    let forged = serde_json::json!({
        "data": {"id": id, "etag": "x", "name": "Evil", "updated_at": "2099-01-01T00:00:00Z"},
        "meta": {"event": "updated", "webhook_id": info.id}
    });
    let answer = http
        .post(&info.url)
        .header("x-hook-signature", "00".repeat(32))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = http
        .post(&info.url)
        .header("x-hook-secret", "attacker-chosen-secret")
        .json(&serde_json::json!({"data": {"webhook_id": info.id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let unknown = format!(
        "{}/clio/webhooks/{}",
        info.url.split("/clio/").next().unwrap(),
        "ab".repeat(32)
    );
    assert_eq!(
        http.post(unknown).body("{}").send().await.unwrap().status(),
        404
    );

    let reasons = poll_until(
        "every refusal audited",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let mut reasons: Vec<String> = stack
                .audit_events("firm-1", &[EventKind::WebhookDeliveryRefused])
                .await
                .into_iter()
                .map(|e| e.reason)
                .collect();
            reasons.sort();
            (reasons.len() >= 5).then_some(reasons)
        },
    )
    .await;
    assert_eq!(
        reasons,
        [
            "bad_signature",
            "bad_signature",
            "replay",
            "second_handshake",
            "unsigned"
        ]
    );
    assert_eq!(stored_name(&stack, id).await.as_deref(), Some("Newer"));
    let subscription = subscriptions(&stack, &connection).await.remove(0);
    assert_eq!(subscription.deliveries_refused, 5);
    assert_eq!(subscription.status, import::WebhookStatus::Enabled as i32);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_out_of_order_leave_the_newest_version() {
    let stack = webhook_stack("webhook_order", Duration::from_millis(200)).await;
    let (_, _, id) = subscribed_with_contact(&stack, "Zero").await;
    let admin = stack.sim.admin();

    // "First" is held back and delivered after "Second".
    admin.reorder_webhooks(Region::Us, 1).await.unwrap();
    rename(&stack, id, "First").await;
    admin.advance_clock(Duration::from_secs(1)).await.unwrap();
    rename(&stack, id, "Second").await;
    let deliveries = settle(&stack).await;
    let sent_at = |name: &str| {
        deliveries
            .iter()
            .filter(|d| d.kind == DeliveryKind::Event && d.body.contains(name))
            .find_map(|d| d.attempts.first().map(|a| a.at))
            .unwrap_or_else(|| panic!("no delivery of {name:?}"))
    };
    assert!(
        sent_at("\"First\"") >= sent_at("\"Second\""),
        "the fault did not reorder the deliveries: the test proves nothing"
    );
    assert_eq!(stored_name(&stack, id).await.as_deref(), Some("Second"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_is_renewed_before_it_expires_on_the_simulators_clock() {
    let stack = webhook_stack("webhook_renewal", Duration::from_millis(200)).await;
    let connection = stack.connect(SCOPES, PERSON, 1).await;
    let first = enable(&stack, &connection).await;
    let admin = stack.sim.admin();
    let at_clio = admin
        .webhook(Region::Us, first.clio_webhook_id)
        .await
        .unwrap();
    let original = at_clio.expires_at;

    // Two and a half days later on both clocks: within a day of expiry, so renewed.
    let later = Duration::from_secs(60 * 60 * 60);
    admin.advance_clock(later).await.unwrap();
    stack
        .import_clock
        .advance(chrono::Duration::from_std(later).unwrap());
    let renewed = poll_until(
        "the subscription renewed at Clio",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let info = admin
                .webhook(Region::Us, first.clio_webhook_id)
                .await
                .ok()?;
            (info.expires_at > original).then_some(info)
        },
    )
    .await;
    assert!(!renewed.expired);

    // Past the first expiry: still delivering.
    let past = Duration::from_secs(24 * 60 * 60);
    admin.advance_clock(past).await.unwrap();
    stack
        .import_clock
        .advance(chrono::Duration::from_std(past).unwrap());
    let id = contact_id(stack.create_contact("After Renewal").await);
    stored_as(&stack, id, "After Renewal", Duration::from_secs(5)).await;
    audited(&stack, EventKind::WebhookRenewed, 1).await;
    assert_eq!(
        subscriptions(&stack, &connection).await.len(),
        1,
        "renewed, not recreated"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_made_while_the_receiver_was_down_are_read_by_an_incremental_import() {
    // Clio would try again only after a minute: longer than the test.
    let mut stack = webhook_stack("webhook_outage", Duration::from_secs(60)).await;
    let (connection, _, id) = subscribed_with_contact(&stack, "Before").await;

    stack.stop_import().await;
    rename(&stack, id, "During The Outage").await;
    // Clio's delivery found nobody listening.
    until_delivery(&stack, "the delivery to fail", |d| {
        d.attempts.iter().any(|a| a.status.is_none())
    })
    .await;
    stack.start_import().await;
    stored_as(&stack, id, "During The Outage", Duration::from_secs(20)).await;
    let jobs = jobs_of(&stack, &connection).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].mode, import::ImportMode::Incremental as i32);
    assert!(
        jobs[0].requested_by.starts_with("webhooks: "),
        "{}",
        jobs[0].requested_by
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_the_connection_removes_its_subscriptions() {
    let stack = webhook_stack("webhook_revoked", Duration::from_millis(200)).await;
    let connection = stack.connect(SCOPES, PERSON, 1).await;
    enable(&stack, &connection).await;
    stack
        .auth()
        .await
        .revoke_connection(with_bearer(
            auth::RevokeConnectionRequest {
                connection_id: connection.clone(),
                reason: "left the firm".into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap();
    let removed = poll_until(
        "the subscription removed",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            subscriptions(&stack, &connection)
                .await
                .into_iter()
                .find(|s| s.status == import::WebhookStatus::Removed as i32)
        },
    )
    .await;
    assert!(removed.removed_reason.contains("revoked"), "{removed:?}");
    let events = audited(&stack, EventKind::WebhookRemoved, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_carrying_only_the_id_is_completed_by_reading_the_record() {
    let stack = webhook_stack("webhook_partial", Duration::from_millis(200)).await;
    let (_, subscription, id) = subscribed_with_contact(&stack, "Whole Record").await;
    rename(&stack, id, "Renamed Again").await;
    stored_as(&stack, id, "Renamed Again", Duration::from_secs(5)).await;
    settle(&stack).await;
    // A signed delivery naming only the record: import-svc reads it by id.
    let reads_before = record_reads(&stack).await;
    let body = serde_json::json!({
        "data": {"id": id},
        "meta": {"event": "updated", "webhook_id": subscription.clio_webhook_id}
    })
    .to_string();
    stack
        .sim
        .admin()
        .deliver_raw_webhook(Region::Us, subscription.clio_webhook_id, &body)
        .await
        .unwrap();
    settle(&stack).await;
    assert_eq!(
        record_reads(&stack).await,
        reads_before + 1,
        "one read by id"
    );
    assert_eq!(
        stored_name(&stack, id).await.as_deref(),
        Some("Renamed Again")
    );
    stack.stop().await;
}

/// Reads of single contacts by id at the simulator.
async fn record_reads(stack: &Stack) -> u64 {
    let calls = stack.sim.admin().calls().await.unwrap();
    calls
        .api
        .iter()
        .filter(|c| c.method == "GET" && c.endpoint == "/api/v4/contacts/{id}")
        .map(|c| c.count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_clio_let_expire_is_made_again_and_the_gap_read_by_an_incremental() {
    let stack = webhook_stack("webhook_expired", Duration::from_millis(200)).await;
    let (connection, first, id) = subscribed_with_contact(&stack, "Before Expiry").await;

    // Clio's clock runs past the expiry (import-svc was not told: its upkeep sees it only
    // on its own clock, later); a change made meanwhile is delivered to nobody.
    let admin = stack.sim.admin();
    let past = Duration::from_secs(80 * 60 * 60);
    admin.advance_clock(past).await.unwrap();
    rename(&stack, id, "Changed While Expired").await;
    stack
        .import_clock
        .advance(chrono::Duration::from_std(past).unwrap());

    let removed = poll_until(
        "the expired subscription replaced",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let all = subscriptions(&stack, &connection).await;
            let old = all
                .iter()
                .find(|s| s.subscription_id == first.subscription_id)?;
            let new = all.iter().find(|s| {
                s.subscription_id != first.subscription_id
                    && s.status == import::WebhookStatus::Enabled as i32
            })?;
            (old.status == import::WebhookStatus::Removed as i32)
                .then(|| (old.clone(), new.clone()))
        },
    )
    .await;
    assert_eq!(
        removed.0.removed_reason,
        "Clio no longer has the subscription"
    );
    stored_as(&stack, id, "Changed While Expired", Duration::from_secs(20)).await;
    let jobs = jobs_of(&stack, &connection).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].mode, import::ImportMode::Incremental as i32);
    // The new subscription delivers.
    rename(&stack, id, "After The New Subscription").await;
    stored_as(
        &stack,
        id,
        "After The New Subscription",
        Duration::from_secs(5),
    )
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_enables_lists_and_disables_webhooks_with_clioctl() {
    use crate::clioctl::{clioctl, config_for};
    let stack = webhook_stack("webhook_clioctl", Duration::from_millis(200)).await;
    let connection = stack.connect(SCOPES, PERSON, 1).await;
    let config = config_for(&stack, &["operator"]);

    let run = clioctl(
        config.path(),
        &[
            "webhooks",
            "enable",
            &connection,
            "--resources",
            "contacts",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    enabled(&stack, &connection).await;
    let run = clioctl(
        config.path(),
        &["webhooks", "list", &connection, "--output", "json"],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(listed[0]["status"], "enabled", "{run:?}");
    assert_eq!(listed[0]["resource"], "contacts", "{run:?}");

    // A resource Clio sends no webhooks of is refused by name.
    let run = clioctl(
        config.path(),
        &["webhooks", "enable", &connection, "--resources", "users"],
    )
    .await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("resources[0]"), "{run:?}");

    let run = clioctl(
        config.path(),
        &[
            "webhooks",
            "disable",
            &connection,
            "--reason",
            "matter closed",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(listed[0]["status"], "removed", "{run:?}");
    assert_eq!(listed[0]["removed_reason"], "matter closed", "{run:?}");
    // Gone at Clio too.
    let at_clio = stack.sim.admin().webhooks(Region::Us, 1).await.unwrap();
    assert!(at_clio.is_empty(), "{at_clio:?}");
    let removed = audited(&stack, EventKind::WebhookRemoved, 1).await;
    assert_eq!(removed[0].actor.as_ref().unwrap().id, "operator");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_clio_suspended_while_the_receiver_was_down_is_made_again() {
    let mut stack = webhook_stack("webhook_suspended", Duration::from_millis(100)).await;
    let (connection, first, id) = subscribed_with_contact(&stack, "Before").await;

    // Down long enough for Clio to fail three deliveries in a row and suspend it.
    stack.stop_import().await;
    let admin = stack.sim.admin();
    for name in ["One", "Two", "Three"] {
        rename(&stack, id, name).await;
        admin.advance_clock(Duration::from_secs(1)).await.unwrap();
    }
    admin
        .wait_for_webhook_status(
            Region::Us,
            first.clio_webhook_id,
            clio_sim::WebhookStatus::Suspended,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    stack.start_import().await;

    let replaced = poll_until(
        "the suspended subscription replaced",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let all = subscriptions(&stack, &connection).await;
            let old = all
                .iter()
                .find(|s| s.subscription_id == first.subscription_id)?;
            all.iter()
                .any(|s| s.status == import::WebhookStatus::Enabled as i32)
                .then(|| old.clone())
                .filter(|old| old.status == import::WebhookStatus::Removed as i32)
        },
    )
    .await;
    assert_eq!(replaced.removed_reason, "Clio suspended the subscription");
    stored_as(&stack, id, "Three", Duration::from_secs(20)).await;
    rename(&stack, id, "Four").await;
    stored_as(&stack, id, "Four", Duration::from_secs(5)).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_refused_while_the_database_was_down_are_read_by_an_incremental() {
    // Clio gives up after three quick attempts, all during the outage.
    let stack = webhook_stack_with("webhook_db_gap", Duration::from_millis(100), true).await;
    let (connection, _, id) = subscribed_with_contact(&stack, "Before").await;

    let proxy = stack.import_db_proxy.as_ref().unwrap();
    proxy.cut();
    rename(&stack, id, "During The Database Outage").await;
    until_delivery(&stack, "Clio to give the delivery up", |d| {
        d.failure.is_some() && d.attempts.iter().all(|a| a.status == Some(503))
    })
    .await;
    proxy.restore();
    stored_as(
        &stack,
        id,
        "During The Database Outage",
        Duration::from_secs(30),
    )
    .await;
    let jobs = jobs_of(&stack, &connection).await;
    assert!(
        jobs.iter()
            .any(|j| j.requested_by.contains("while the database was down")),
        "{jobs:?}"
    );
    stack.stop().await;
}
