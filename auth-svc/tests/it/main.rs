//! auth-svc's integration tests: the service in-process on `127.0.0.1:0`, its own fresh
//! Postgres database, and the Clio simulator over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apps;
mod connect;
mod custody;
mod keys;
mod leases;
mod outbox;
mod ownership;
mod refresh;
mod refresh_under_stress;
mod requests;
mod revocation;
mod silent_front;
mod support;
