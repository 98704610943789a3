//! import-svc integration tests: real RabbitMQ, real Postgres, the service over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_budget;
mod audit_events;
mod broker_outage;
mod dead_letters;
mod deletions;
mod hung_broker;
mod list_jobs;
mod records;
mod skipped_records;
mod submit;
mod suggestions;
mod support;
mod watch;
