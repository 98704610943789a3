//! Starting audit-svc for a test, authorised clients, and an event builder.

use std::net::SocketAddr;

use audit_svc::Config;
use audit_svc::config::WriterGrant;
use chrono::{DateTime, Utc};
use harness::{SpawnedService, TestDatabase, channel, spawn_service, with_bearer};
use proto::audit::v1::audit_service_client::AuditServiceClient;
use proto::audit::v1::compliance_service_client::ComplianceServiceClient;
use proto::audit::v1::{ExportChunk, RecordRequest, RecordResponse};
use proto::common::v1 as pb;
use secrecy::SecretString;
use service_runtime::clock::{ManualClock, SharedClock};
use service_runtime::config::ServiceConfig;
use tonic::transport::Channel;
use uuid::Uuid;

/// A fixed test signing seed, so checkpoints verify across restarts.
pub const SEED_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

pub struct RunningAudit {
    pub address: SocketAddr,
    service: SpawnedService,
}

/// What a test may change before the service starts.
pub struct Setup {
    pub checkpoint_every: u64,
    /// How often the periodic task signs heads that moved.
    pub checkpoint_interval_ms: u64,
    pub clock: Option<ManualClock>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            checkpoint_every: 10,
            // Longer than any test: tests that count checkpoints expect only those signed
            // every `checkpoint_every` events, never a periodic one in between.
            checkpoint_interval_ms: 600_000,
            clock: None,
        }
    }
}

pub fn config(database: &TestDatabase, setup: &Setup) -> Config {
    let mut config = Config {
        service: ServiceConfig {
            callers: harness::caller_config(),
            health_interval_ms: 100,
            shutdown_grace_ms: 3_000,
            ..ServiceConfig::default()
        },
        ..Config::default()
    };
    config.service.database.url = database.secret_url();
    config.signing.key = Some(SecretString::from(SEED_HEX));
    config.checkpoints.every_events = setup.checkpoint_every;
    config.checkpoints.interval_ms = setup.checkpoint_interval_ms;
    config.watch.poll_interval_ms = 200;
    config.writers = test_writers();
    config
}

/// The writer grants of the tests: `audit_writer` records every kind a writer may (review
/// kinds are recorded only through ComplianceService) as source `test`; `auth_writer` and
/// `import_writer` hold auth-svc's and import-svc's grants.
pub fn test_writers() -> Vec<WriterGrant> {
    let every_kind = (1..)
        .map_while(|k| pb::EventKind::try_from(k).ok())
        .filter(|k| {
            !matches!(
                k,
                pb::EventKind::ReviewGenerated | pb::EventKind::ReviewAttested
            )
        })
        .map(audit_svc::event::kind_name)
        .collect();
    vec![
        WriterGrant {
            caller: "audit_writer".into(),
            sources: vec!["test".into()],
            kinds: every_kind,
        },
        WriterGrant::auth_svc("auth_writer"),
        WriterGrant::import_svc("import_writer"),
    ]
}

pub async fn start(database: &TestDatabase, setup: Setup) -> RunningAudit {
    let config = config(database, &setup);
    start_configured(config, setup).await
}

/// [`start`] with a config the test changed (from [`config`]); `setup` gives the clock.
pub async fn start_configured(config: Config, setup: Setup) -> RunningAudit {
    let clock: SharedClock = match setup.clock {
        Some(clock) => std::sync::Arc::new(clock),
        None => service_runtime::clock::system_clock(),
    };
    let service = spawn_service(|listener, shutdown| {
        audit_svc::run_with(config, listener, shutdown, audit_svc::Options { clock })
    })
    .await;
    RunningAudit {
        address: service.address,
        service,
    }
}

impl RunningAudit {
    pub async fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(channel(self.address).await)
    }

    pub async fn compliance(&self) -> ComplianceServiceClient<Channel> {
        ComplianceServiceClient::new(channel(self.address).await)
    }

    /// Records events as the audit_writer caller.
    pub async fn record(
        &self,
        events: Vec<pb::AuditEvent>,
    ) -> Result<RecordResponse, tonic::Status> {
        self.audit()
            .await
            .record(writer(RecordRequest {
                events,
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// A request as the audit_writer caller.
pub fn writer<T>(message: T) -> tonic::Request<T> {
    with_bearer(message, &harness::token_of("audit_writer"))
}

/// A request as the compliance caller.
pub fn compliance<T>(message: T) -> tonic::Request<T> {
    with_bearer(message, &harness::token_of("compliance"))
}

/// The text of an export stream, chunk after chunk.
pub async fn export_text(
    response: Result<tonic::Response<tonic::Streaming<ExportChunk>>, tonic::Status>,
) -> String {
    let mut stream = response.expect("the export starts").into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await.expect("an export chunk") {
        text.push_str(std::str::from_utf8(&chunk.data).expect("UTF-8 export"));
    }
    text
}

/// Asserts a call was refused with `code` and a message starting with `field`; a refused
/// argument also names it in the standard `BadRequest` detail.
#[track_caller]
pub fn assert_refused(status: &tonic::Status, code: tonic::Code, field: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(field), "{}", status.message());
    if code == tonic::Code::InvalidArgument {
        let violations = proto::FieldViolation::of(status);
        assert!(
            violations.iter().any(|v| v.field.starts_with(field)),
            "{field} in {violations:?}"
        );
    }
}

pub fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    proto::time::timestamp(at)
}

pub fn scope(text: &str) -> pb::Scope {
    let (family, access) = text.split_once(':').unwrap();
    pb::Scope {
        family: family.into(),
        access: match access {
            "read" => pb::Access::Read,
            _ => pb::Access::Write,
        } as i32,
    }
}

/// An event builder with sensible defaults for tests.
#[derive(Clone)]
pub struct Ev(pub pb::AuditEvent);

impl Ev {
    pub fn new(kind: pb::EventKind, tenant: &str, at: DateTime<Utc>) -> Ev {
        Ev(pb::AuditEvent {
            event_id: Uuid::new_v4().to_string(),
            kind: kind as i32,
            tenant: tenant.into(),
            actor: Some(pb::Actor {
                kind: pb::actor::Kind::Service as i32,
                id: "auth-svc".into(),
            }),
            subject: Some(pb::Subject {
                kind: pb::subject::Kind::Connection as i32,
                id: "none".into(),
            }),
            occurred_at: Some(ts(at)),
            source: "test".into(),
            ..Default::default()
        })
    }

    pub fn subject(mut self, kind: pb::subject::Kind, id: &str) -> Ev {
        self.0.subject = Some(pb::Subject {
            kind: kind as i32,
            id: id.into(),
        });
        self
    }

    pub fn actor(mut self, kind: pb::actor::Kind, id: &str) -> Ev {
        self.0.actor = Some(pb::Actor {
            kind: kind as i32,
            id: id.into(),
        });
        self
    }

    pub fn refs(mut self, refs: pb::EventRefs) -> Ev {
        self.0.refs = Some(refs);
        self
    }

    pub fn scopes(mut self, scopes: &[&str]) -> Ev {
        self.0.scopes = scopes.iter().map(|s| scope(s)).collect();
        self
    }

    pub fn payload(mut self, payload: serde_json::Value) -> Ev {
        self.0.payload_json = payload.to_string();
        self
    }

    pub fn build(self) -> pb::AuditEvent {
        self.0
    }
}

/// `n` simple events for `tenant`.
pub fn import_events(tenant: &str, n: usize) -> Vec<pb::AuditEvent> {
    (0..n)
        .map(|i| {
            Ev::new(pb::EventKind::ImportStarted, tenant, Utc::now())
                .subject(pb::subject::Kind::Job, &format!("job-{i}"))
                .payload(serde_json::json!({ "n": i, "resource": "contacts" }))
                .build()
        })
        .collect()
}
