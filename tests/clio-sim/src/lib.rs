//! A simulator of Clio Manage's OAuth server and API v4, for tests, demos and benchmarks.
//!
//! Written from Clio's documentation (`shared/clio-api.md`), not from our client's types,
//! so it is an independent check on the client. See the crate README for the admin API.

mod admin;
mod api;
mod apps;
mod calls;
mod clock;
mod config;
mod dataset;
mod duration_ms;
mod faults;
mod oauth;
mod ratelimit;
mod region;
mod resource;
mod routes;
mod server;
mod webhooks;

pub use admin::AdminClient;
pub use api::DEFAULT_API_VERSION;
pub use apps::AppSpec;
pub use calls::{ApiCalls, CallCounts, TokenCalls, app_key, token_id};
pub use config::{
    DEFAULT_SUCCESS_TITLE, DatasetSize, ExpiredWebhooks, RateLimit, Region, SimConfig,
    WebhookConfig,
};
pub use faults::Fault;
pub use oauth::{ConsentOutcome, Decision};
pub use resource::{RecordId, Resource};
pub use server::ClioSim;
pub use webhooks::{
    DeliveryAttempt, DeliveryKind, DeliveryState, HandshakeOutcome, WebhookDelivery, WebhookEvent,
    WebhookInfo, WebhookModel, WebhookStatus,
};
