//! The client for Clio Manage (API v4) and its OAuth 2.0 server: the one place the
//! workspace speaks to Clio.
//!
//! Every host is configuration ([`region::RegionUrls`]), so tests point the client at the
//! simulator and a connection's region decides every host its token is sent to. The
//! modules hold one concern each:
//!
//! - [`region`]: Clio's regions and their base URLs; [`host_pin`]: a token only ever goes
//!   to its region's API host;
//! - [`client`]: the HTTP client (timeouts, no redirects) and [`ClioClient`];
//! - [`oauth`]: the authorization-code flow, refresh and deauthorize; [`users`]: `who_am_i`;
//! - [`one_call`]: one request answering one object, used by [`writes`] (create, read by
//!   id) and [`webhooks`] (subscriptions);
//! - [`listing`]: reading a list page by page ([`Lister`]), with [`fields`] and
//!   [`paging`], each record checked on its own ([`record_check`]);
//! - [`rate_gate`]: pacing each token within Clio's rate limit; [`app_budget`]: the hook
//!   for an app's limit across its tokens; [`retry`]: `Retry-After` and capped backoff;
//! - [`observer`]: a hook that sees every call and rate-limit wait, for metrics;
//! - [`error`]: how Clio's failures are classified ([`ClioError`]), so callers can decide
//!   between "ask the person to reconnect", "wait and retry" and "give up".
//!
//! Secrets (client secrets, codes, access and refresh tokens) travel as
//! [`secrecy::SecretString`]; no error or `Debug` output of this crate contains one. Text
//! from Clio that ends up in an error is made [`printable`] first.

pub mod app_budget;
pub mod client;
pub mod error;
pub mod fields;
pub mod host_pin;
pub mod listing;
pub mod oauth;
pub mod observer;
pub mod one_call;
pub mod paging;
mod printable;
pub mod rate_gate;
pub mod record_check;
pub mod region;
pub mod retry;
pub mod users;
pub mod webhooks;
pub mod writes;

pub use app_budget::AppBudget;
pub use client::{ClioClient, HttpSettings};
pub use error::{ClioError, ClioErrorKind};
pub use listing::{ListQuery, Lister, ListingSettings, PageRequest, WaitObserver};
pub use oauth::{AppCredentials, AuthorizeRequest, Pkce, TokenGrant};
pub use observer::{Call, CallObserver, Endpoint};
pub use one_call::Credentials;
pub use paging::Page;
pub use printable::printable;
pub use rate_gate::{RateGate, RateGates};
pub use record_check::SkippedRecord;
pub use region::{Region, RegionUrls, UnknownRegion};
pub use users::WhoAmI;
pub use webhooks::{Subscription, WebhookClient};
pub use writes::{CreateRequest, Creator};

/// The Clio API minor version this client is written against (`X-API-VERSION`).
pub const API_VERSION: &str = "4.0.13";
