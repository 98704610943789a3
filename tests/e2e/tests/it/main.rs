//! Cross-service integration tests, one binary (links once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod foundation;
mod services;
