use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_outbox::{
    Delivery, QUARANTINE_SQL, Relay, RelayConfig, SCHEMA_SQL, TRACE_CONTEXT_SQL, enqueue,
    pending_count,
};
use harness::{RecordHandler, TcpProxy, TestDatabase, audit_stand_in, poll_until};
use proto::audit::v1::{RecordRequest, RecordResponse};
use proto::common::v1::{AuditEvent, EventKind};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "outbox-test-credential-0123456789";

/// Records what it is sent, refusing calls without the expected credential.
#[derive(Clone, Default)]
struct Recorder {
    received: Arc<Mutex<Vec<AuditEvent>>>,
    /// Every `trace_parents` entry sent, by event id.
    trace_parents: Arc<Mutex<HashMap<String, String>>>,
}

#[tonic::async_trait]
impl RecordHandler for Recorder {
    async fn record(
        &self,
        request: tonic::Request<RecordRequest>,
    ) -> Result<tonic::Response<RecordResponse>, tonic::Status> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if bearer != format!("Bearer {TOKEN}") {
            return Err(tonic::Status::unauthenticated("bad credential"));
        }
        let request = request.into_inner();
        self.trace_parents
            .lock()
            .unwrap()
            .extend(request.trace_parents);
        let events = request.events;
        let mut received = self.received.lock().unwrap();
        let mut duplicates = 0;
        for event in &events {
            if received.iter().any(|e| e.event_id == event.event_id) {
                duplicates += 1;
            } else {
                received.push(event.clone());
            }
        }
        Ok(tonic::Response::new(RecordResponse { events, duplicates }))
    }
}

async fn start_recorder() -> (Recorder, SocketAddr) {
    let recorder = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = audit_stand_in(recorder.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (recorder, address)
}

pub async fn outbox_database() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    sqlx::raw_sql(SCHEMA_SQL).execute(&pool).await.unwrap();
    sqlx::raw_sql(QUARANTINE_SQL).execute(&pool).await.unwrap();
    sqlx::raw_sql(TRACE_CONTEXT_SQL)
        .execute(&pool)
        .await
        .unwrap();
    (database, pool)
}

fn relay_config(address: SocketAddr) -> RelayConfig {
    RelayConfig {
        endpoint: format!("http://{address}"),
        token: Some(SecretString::from(TOKEN)),
        tls: None,
        batch_size: 7,
        poll_interval: Duration::from_millis(50),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        keep_delivered: Duration::from_secs(3_600),
    }
}

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        kind: EventKind::TokenRefreshed as i32,
        tenant: "firm".into(),
        reason: format!("event {n}"),
        payload_json: "{}".into(),
        source: "outbox-test".into(),
        ..AuditEvent::default()
    }
}

#[tokio::test]
async fn only_committed_events_are_delivered_in_order_after_an_outage() {
    let (_database, pool) = outbox_database().await;
    let (recorder, address) = start_recorder().await;
    let proxy = TcpProxy::start(address).await;
    proxy.cut();

    // Twenty events in committed transactions, and one in a transaction rolled back.
    for n in 0..20 {
        let mut tx = pool.begin().await.unwrap();
        enqueue(&mut tx, event(n)).await.unwrap();
        tx.commit().await.unwrap();
        if n == 10 {
            let mut tx = pool.begin().await.unwrap();
            enqueue(&mut tx, event(999)).await.unwrap();
            tx.rollback().await.unwrap();
        }
    }
    let relay = Relay::new(pool.clone(), relay_config(proxy.address)).unwrap();
    // audit-svc is down: the batch is refused and nothing is marked delivered.
    assert!(relay.deliver_batch().await.is_err());
    assert_eq!(pending_count(&pool).await.unwrap(), 20);

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    assert!(recorder.received.lock().unwrap().is_empty());
    proxy.restore();
    poll_until(
        "all events delivered",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (pending_count(&pool).await.unwrap() == 0).then_some(()) },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap();

    let reasons: Vec<String> = recorder
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    let expected: Vec<String> = (0..20).map(|n| format!("event {n}")).collect();
    assert_eq!(reasons, expected);
}

#[tokio::test]
async fn concurrent_producers_are_delivered_in_commit_order_and_redelivery_is_harmless() {
    let (_database, pool) = outbox_database().await;
    let (recorder, address) = start_recorder().await;
    let mut producers = Vec::new();
    for n in 0..30 {
        let pool = pool.clone();
        producers.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            enqueue(&mut tx, event(n)).await.unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let relay = Relay::new(pool.clone(), relay_config(address)).unwrap();
    while let Delivery::Delivered(_) = relay.deliver_batch().await.unwrap() {}
    // Pretend the relay died after Record but before marking: everything goes again.
    sqlx::query("UPDATE audit_outbox SET delivered_at = NULL")
        .execute(&pool)
        .await
        .unwrap();
    while let Delivery::Delivered(_) = relay.deliver_batch().await.unwrap() {}

    let received = recorder.received.lock().unwrap().clone();
    assert_eq!(received.len(), 30, "each event recorded once");
    let by_seq: Vec<String> =
        sqlx::query_scalar("SELECT event_id::text FROM audit_outbox ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let delivered: Vec<String> = received.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(delivered, by_seq, "delivered in outbox order");
}

#[tokio::test]
async fn malformed_events_are_refused_at_enqueue() {
    let (_database, pool) = outbox_database().await;
    let mut tx = pool.begin().await.unwrap();
    let no_tenant = AuditEvent {
        tenant: String::new(),
        ..event(1)
    };
    let error = enqueue(&mut tx, no_tenant).await.unwrap_err().to_string();
    assert!(error.contains("tenant"), "{error}");
    let bad_id = AuditEvent {
        event_id: "not-a-uuid".into(),
        ..event(1)
    };
    let error = enqueue(&mut tx, bad_id).await.unwrap_err().to_string();
    assert!(error.contains("event_id"), "{error}");
}

#[tokio::test]
async fn each_event_goes_with_the_trace_context_it_was_enqueued_under() {
    let (_database, pool) = outbox_database().await;
    let (recorder, address) = start_recorder().await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let mut tx = pool.begin().await.unwrap();
        ids.push(enqueue(&mut tx, event(n)).await.unwrap());
        tx.commit().await.unwrap();
    }
    // Enqueued outside any traced span: no context is kept.
    let untraced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_outbox WHERE traceparent IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(untraced, 2);
    // The first stands for an event a traced job enqueued.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    sqlx::query("UPDATE audit_outbox SET traceparent = $1 WHERE event_id = $2")
        .bind(parent)
        .bind(ids[0])
        .execute(&pool)
        .await
        .unwrap();

    let relay = Relay::new(pool.clone(), relay_config(address)).unwrap();
    assert_eq!(relay.deliver_batch().await.unwrap(), Delivery::Delivered(2));
    let carried = recorder.trace_parents.lock().unwrap().clone();
    assert_eq!(
        carried,
        HashMap::from([(ids[0].to_string(), parent.to_owned())])
    );
}
