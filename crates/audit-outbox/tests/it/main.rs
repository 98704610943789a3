//! The outbox against real Postgres and a real gRPC audit server (a recording stand-in
//! for audit-svc's `Record`, behind a cut-able TCP proxy).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod quarantine;
