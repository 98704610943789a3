//! audit-svc integration tests: the service in-process over gRPC, on a fresh Postgres
//! database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod append_only;
mod checkpoints;
mod compliance;
mod export;
mod logins;
mod projections;
mod record;
mod support;
mod tampering;
mod watch;
mod witness;
mod writers;
