//! Producers never wedge: hostile strings are fitted before they are stored, batches stay
//! under the byte cap, and an event audit-svc still refuses is quarantined while the
//! events behind it are delivered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_outbox::{
    Delivery, FITTED_KEY, Relay, RelayConfig, enqueue, health, pending_count, quarantined_count,
};
use harness::{RecordHandler, audit_stand_in};
use prost::Message;
use proto::audit::v1::{RecordRequest, RecordResponse};
use proto::audit_limits::{MAX_ID_BYTES, MAX_PAYLOAD_BYTES, MAX_RECORD_BYTES, MAX_TEXT_BYTES};
use proto::common::v1::{Actor, AuditEvent, EventKind, EventRefs, Subject, actor, subject};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::delivery::outbox_database;

/// Which requests the stand-in refuses, and how.
type Refuse = dyn Fn(&[AuditEvent]) -> Option<tonic::Status> + Send + Sync;

/// A stand-in for audit-svc that refuses what `refuse` says, as audit-svc words it.
#[derive(Clone)]
struct Strict {
    received: Arc<Mutex<Vec<AuditEvent>>>,
    request_bytes: Arc<Mutex<Vec<usize>>>,
    refuse: Arc<Refuse>,
}

#[tonic::async_trait]
impl RecordHandler for Strict {
    async fn record(
        &self,
        request: tonic::Request<RecordRequest>,
    ) -> Result<tonic::Response<RecordResponse>, tonic::Status> {
        let request = request.into_inner();
        self.request_bytes
            .lock()
            .unwrap()
            .push(request.encoded_len());
        if let Some(status) = (self.refuse)(&request.events) {
            return Err(status);
        }
        let mut received = self.received.lock().unwrap();
        for event in &request.events {
            if !received.iter().any(|e| e.event_id == event.event_id) {
                received.push(event.clone());
            }
        }
        Ok(tonic::Response::new(RecordResponse {
            events: request.events,
            duplicates: 0,
        }))
    }
}

async fn start_strict(
    refuse: impl Fn(&[AuditEvent]) -> Option<tonic::Status> + Send + Sync + 'static,
) -> (Strict, SocketAddr) {
    let strict = Strict {
        received: Arc::default(),
        request_bytes: Arc::default(),
        refuse: Arc::new(refuse),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(audit_stand_in(strict.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (strict, address)
}

fn relay(pool: &PgPool, address: SocketAddr, batch_size: u32) -> Relay {
    Relay::new(
        pool.clone(),
        RelayConfig {
            endpoint: format!("http://{address}"),
            token: Some(SecretString::from("outbox-test-credential-0123456789")),
            tls: None,
            batch_size,
            poll_interval: Duration::from_millis(50),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(5),
            keep_delivered: Duration::from_secs(3_600),
        },
    )
    .unwrap()
}

fn event(reason: &str) -> AuditEvent {
    AuditEvent {
        kind: EventKind::AccessDenied as i32,
        tenant: "platform".into(),
        actor: Some(Actor {
            kind: actor::Kind::Service as i32,
            id: "unauthenticated".into(),
        }),
        subject: Some(Subject {
            kind: subject::Kind::Rpc as i32,
            id: "/clio_connect.auth.v1.AuthService/ListApps".into(),
        }),
        reason: reason.into(),
        payload_json: "{}".into(),
        source: "auth-svc".into(),
        ..AuditEvent::default()
    }
}

async fn enqueue_all(pool: &PgPool, events: Vec<AuditEvent>) {
    for event in events {
        let mut tx = pool.begin().await.unwrap();
        enqueue(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
    }
}

async fn deliver_all(relay: &Relay) -> Vec<Delivery> {
    let mut attempts = Vec::new();
    loop {
        match relay.deliver_batch().await.unwrap() {
            Delivery::Idle => return attempts,
            other => attempts.push(other),
        }
    }
}

/// audit-svc's own message for an event it refuses: `events[i].<field>: <problem>`.
fn refuse_reason_containing(
    marker: &'static str,
) -> impl Fn(&[AuditEvent]) -> Option<tonic::Status> {
    move |events| {
        events
            .iter()
            .position(|e| e.reason.contains(marker))
            .map(|i| tonic::Status::invalid_argument(format!("events[{i}].reason: not acceptable")))
    }
}

#[tokio::test]
async fn hostile_strings_are_fitted_before_they_are_stored() {
    let (_database, pool) = outbox_database().await;
    let path = format!("/{}", "m".repeat(10_239));
    let mut hostile = event(&"r\0".repeat(3_000));
    hostile.subject.as_mut().unwrap().id = path.clone();
    hostile.refs = Some(EventRefs {
        principal: format!("alice{}", "\u{1b}[31m"),
        ..EventRefs::default()
    });
    hostile.payload_json = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PAYLOAD_BYTES));
    enqueue_all(&pool, vec![hostile]).await;

    let stored: Vec<u8> = sqlx::query_scalar("SELECT event FROM audit_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    let stored = AuditEvent::decode(stored.as_slice()).unwrap();
    let subject = &stored.subject.as_ref().unwrap().id;
    assert!(
        subject.len() <= MAX_ID_BYTES && subject.contains("sha256:"),
        "{subject}"
    );
    assert!(subject.starts_with("/mmmm"), "{subject}");
    let principal = &stored.refs.as_ref().unwrap().principal;
    assert!(principal.starts_with("alice…sha256:"), "{principal}");
    assert!(stored.reason.len() <= MAX_TEXT_BYTES);
    assert!(!stored.reason.contains('\0'));
    assert!(
        stored.reason.contains("[truncated: 6000 bytes"),
        "{}",
        stored.reason
    );
    let payload: serde_json::Value = serde_json::from_str(&stored.payload_json).unwrap();
    assert_eq!(payload[FITTED_KEY]["subject.id"], 10_240);
    assert_eq!(payload[FITTED_KEY]["reason"], 6_000);
    assert!(payload[FITTED_KEY]["payload_json"].as_u64().unwrap() > MAX_PAYLOAD_BYTES as u64);
    assert!(
        payload["payload_sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[tokio::test]
async fn an_event_audit_svc_refuses_is_quarantined_and_the_rest_are_delivered() {
    let (_database, pool) = outbox_database().await;
    let (strict, address) = start_strict(refuse_reason_containing("poison")).await;
    let events: Vec<AuditEvent> = (0..10)
        .map(|n| {
            event(&if n == 3 {
                "poison".to_owned()
            } else {
                format!("event {n}")
            })
        })
        .collect();
    enqueue_all(&pool, events).await;
    let relay = relay(&pool, address, 4);

    let attempts = deliver_all(&relay).await;
    assert!(
        attempts.contains(&Delivery::Sorted {
            delivered: 0,
            quarantined: 1
        }),
        "{attempts:?}"
    );
    let delivered: Vec<String> = strict
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    let expected: Vec<String> = (0..10)
        .filter(|n| *n != 3)
        .map(|n| format!("event {n}"))
        .collect();
    assert_eq!(delivered, expected, "in order, without the refused one");
    assert_eq!(pending_count(&pool).await.unwrap(), 0);
    assert_eq!(quarantined_count(&pool).await.unwrap(), 1);
    let (code, reason, kind): (String, String, String) =
        sqlx::query_as("SELECT code, reason, kind FROM audit_outbox_quarantine")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(code, "InvalidArgument");
    assert_eq!(reason, "events[3].reason: not acceptable");
    assert_eq!(kind, "EVENT_KIND_ACCESS_DENIED");
    let state = health(&pool).await.unwrap();
    assert_eq!(
        (state.status, state.pending, state.quarantined),
        ("quarantined", 0, 1)
    );
}

#[tokio::test]
async fn a_refusal_naming_no_event_is_sorted_out_one_by_one() {
    let (_database, pool) = outbox_database().await;
    // Refuses any request holding the poisoned event without saying which one it is.
    let (strict, address) = start_strict(|events: &[AuditEvent]| {
        events
            .iter()
            .any(|e| e.reason.contains("poison"))
            .then(|| tonic::Status::invalid_argument("the request is not acceptable"))
    })
    .await;
    let events: Vec<AuditEvent> = (0..6)
        .map(|n| {
            event(&if n == 4 {
                "poison".to_owned()
            } else {
                format!("event {n}")
            })
        })
        .collect();
    enqueue_all(&pool, events).await;
    deliver_all(&relay(&pool, address, 10)).await;
    assert_eq!(strict.received.lock().unwrap().len(), 5);
    assert_eq!(quarantined_count(&pool).await.unwrap(), 1);
    assert_eq!(pending_count(&pool).await.unwrap(), 0);
}

#[tokio::test]
async fn transient_and_credential_failures_quarantine_nothing() {
    let (_database, pool) = outbox_database().await;
    let (_strict, address) = start_strict(|_: &[AuditEvent]| {
        Some(tonic::Status::permission_denied(
            "events: caller \"x\" has no writer grant at audit-svc",
        ))
    })
    .await;
    enqueue_all(&pool, vec![event("a"), event("b")]).await;
    let relay = relay(&pool, address, 10);
    let mut failures = 0;
    while failures < 3 {
        match relay.deliver_batch().await {
            Err(_) => failures += 1,
            // The failed attempt's transaction (and delivery lock) is still being rolled
            // back on its connection.
            Ok(Delivery::OtherRelayActive) => tokio::task::yield_now().await,
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(pending_count(&pool).await.unwrap(), 2);
    assert_eq!(quarantined_count(&pool).await.unwrap(), 0);
}

#[tokio::test]
async fn batches_stay_under_the_byte_cap() {
    let (_database, pool) = outbox_database().await;
    let (strict, address) = start_strict(|_: &[AuditEvent]| None).await;
    // 40 events of ~60 KiB: 2.4 MB in all, so at least three requests.
    let big = "b".repeat(60 * 1024);
    let events: Vec<AuditEvent> = (0..40)
        .map(|n| AuditEvent {
            payload_json: serde_json::json!({ "n": n, "blob": big }).to_string(),
            ..event(&format!("event {n}"))
        })
        .collect();
    enqueue_all(&pool, events).await;
    let relay = relay(&pool, address, 1_000);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    harness::poll_until(
        "every big event delivered",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (pending_count(&pool).await.unwrap() == 0).then_some(()) },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(strict.received.lock().unwrap().len(), 40);
    let sizes = strict.request_bytes.lock().unwrap().clone();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= MAX_RECORD_BYTES), "{sizes:?}");
}
