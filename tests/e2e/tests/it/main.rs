//! Cross-service integration tests, one binary (links once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod denials;
mod foundation;
mod import_jobs;
mod import_results;
mod process;
mod services;
mod stack;
mod tls;
