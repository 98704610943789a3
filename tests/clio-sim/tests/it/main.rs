//! clio-sim integration tests: the simulator started in-process (or as its binary) and
//! driven over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod api;
mod binary;
mod faults;
mod oauth;
mod rate_limit;
mod records;
mod support;
mod time_entries;
mod webhooks;
