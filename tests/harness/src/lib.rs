//! Test support shared by every crate's integration tests.
//!
//! Tests run the real thing: a fresh Postgres database per test ([`TestDatabase`]), a
//! unique RabbitMQ prefix per test ([`unique_prefix`]), services on `127.0.0.1:0`, and
//! [`poll_until`] instead of sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod amqp;
mod audit_stand_in;
mod binary;
mod credentials;
mod database;
mod descriptor;
mod grpc;
mod logs;
mod otlp;
mod out_of_band;
mod polling;
mod proxy;
mod service;
pub mod tls;

pub use amqp::{AmqpMessage, TestBroker};
pub use audit_stand_in::{RecordHandler, RecordOnly, audit_stand_in};
pub use binary::service_binary;
pub use credentials::{TestCaller, caller_config, callers_toml, test_callers, token_of};
pub use database::{TestDatabase, postgres_admin_url};
pub use descriptor::declared_rpc_paths;
pub use grpc::{
    audit_events, channel, health_status, reflection_services, wait_for_health, with_bearer,
};
pub use logs::{CapturedLogs, capture_logs};
pub use otlp::{CollectedSpan, OtlpCollector};
pub use out_of_band::{
    ClioUser, approved_app, connect_out_of_band, connect_to_app, registered_app,
};
pub use polling::poll_until;
pub use proxy::TcpProxy;
pub use service::{SpawnedService, spawn_service};
pub use tonic_health::pb::health_check_response::ServingStatus;

/// A prefix no other test uses, for queues, exchanges and other shared names.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// The RabbitMQ the tests use (`CLIO_CONNECT_TEST_AMQP` overrides).
pub fn amqp_url() -> String {
    std::env::var("CLIO_CONNECT_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The address of the RabbitMQ the tests use.
pub fn amqp_address() -> std::net::SocketAddr {
    let url = url::Url::parse(&amqp_url()).expect("AMQP URL");
    let host = url.host_str().expect("AMQP host");
    std::net::ToSocketAddrs::to_socket_addrs(&(host, url.port().unwrap_or(5672)))
        .expect("resolve the AMQP host")
        .next()
        .expect("an AMQP address")
}
