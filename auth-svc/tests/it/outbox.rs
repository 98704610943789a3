//! Audit events reach audit-svc through the outbox: nothing is lost while audit-svc is
//! unreachable, and once it is back every event arrives, in the order it was committed.
//!
//! audit-svc here is a gRPC `AuditService` that keeps what `Record` is sent (by event id,
//! as audit-svc does), behind a TCP proxy the test cuts and restores.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{TcpProxy, poll_until};
use proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use proto::audit::v1::{RecordRequest, RecordResponse};
use proto::common::v1::{AuditEvent, EventKind};
use secrecy::SecretString;

use crate::support::{self, AppOptions, Setup};

/// Keeps the events `Record` accepted, once each, in arrival order.
#[derive(Clone, Default)]
struct AuditLog(Arc<Mutex<Vec<AuditEvent>>>);

#[tonic::async_trait]
impl AuditService for AuditLog {
    async fn record(
        &self,
        request: tonic::Request<RecordRequest>,
    ) -> Result<tonic::Response<RecordResponse>, tonic::Status> {
        let authorized = request
            .metadata()
            .get("authorization")
            .is_some_and(|v| v == format!("Bearer {}", harness::token_of("audit_writer")).as_str());
        if !authorized {
            return Err(tonic::Status::unauthenticated("not an audit writer"));
        }
        let events = request.into_inner().events;
        let mut log = self.0.lock().unwrap();
        let before = log.len();
        for event in &events {
            if !log.iter().any(|e| e.event_id == event.event_id) {
                log.push(event.clone());
            }
        }
        let duplicates = u32::try_from(events.len() - (log.len() - before)).unwrap();
        Ok(tonic::Response::new(RecordResponse { events, duplicates }))
    }
}

impl AuditLog {
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(AuditServiceServer::new(self.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        address
    }

    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_id.clone())
            .collect()
    }
}

#[tokio::test]
async fn events_committed_while_audit_svc_is_down_arrive_in_order_once_it_is_back() {
    let audit = AuditLog::default();
    let proxy = TcpProxy::start(audit.serve().await).await;
    proxy.cut();
    let endpoint = format!("http://{}", proxy.address);
    let setup = Setup {
        tweak: Box::new(move |config| {
            config.audit.endpoint = endpoint;
            config.audit.token = Some(SecretString::from(harness::token_of("audit_writer")));
            config.audit.poll_interval_ms = 50;
            config.audit.max_backoff_ms = 200;
            config.audit.request_timeout_ms = 1_000;
        }),
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    let app = stack.app(AppOptions::default()).await;
    let connection = stack.connect(&app, "wes@firm", 1, None).await;
    stack.revoke(&connection.connection_id).await;

    let committed = stack.outbox().await;
    let kinds: Vec<EventKind> = committed.iter().map(|(kind, _)| *kind).collect();
    for kind in [
        EventKind::AppRegistered,
        EventKind::AppApproved,
        EventKind::ConsentRecorded,
        EventKind::ConnectionGranted,
        EventKind::ConnectionRevoked,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing from {kinds:?}");
    }
    // The relay has been trying all along; nothing got through the cut.
    assert!(audit.ids().is_empty());
    let mut db = stack.database.connect().await;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(pending, i64::try_from(committed.len()).unwrap());

    proxy.restore();
    let expected: Vec<String> = committed.iter().map(|(_, e)| e.event_id.clone()).collect();
    poll_until(
        "the outbox delivered",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let delivered = audit.ids();
            (delivered.len() >= expected.len()).then_some(())
        },
    )
    .await;
    assert_eq!(
        audit.ids()[..expected.len()],
        expected[..],
        "commit order kept"
    );
    poll_until(
        "every row marked delivered",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let mut db = stack.database.connect().await;
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL")
                    .fetch_one(&mut db)
                    .await
                    .unwrap();
            (pending == 0).then_some(())
        },
    )
    .await;
    stack.stop().await;
}
