//! A typed client for Clio Manage (API v4) and its OAuth 2.0 server.
//!
//! Every host is configuration ([`region::RegionUrls`]), so tests point the client at the
//! simulator and a connection's region decides every host its token is sent to. The
//! modules hold one concern each: regions and their hosts ([`region`]), the HTTP client
//! settings ([`client`]), the authorization-code flow, refresh and deauthorize
//! ([`oauth`]), the users endpoints ([`users`]), and how Clio's failures are classified
//! ([`errors`]) so callers can decide between "ask the person to reconnect", "wait and
//! retry" and "give up".
//!
//! Secrets (client secrets, codes, access and refresh tokens) travel as
//! [`secrecy::SecretString`]; no error or `Debug` output of this crate contains one.

pub mod client;
pub mod errors;
pub mod oauth;
pub mod region;
pub mod users;

pub use client::{ClioClient, HttpSettings};
pub use errors::{ClioError, ClioErrorKind};
pub use oauth::{AppCredentials, AuthorizeRequest, Pkce, TokenGrant};
pub use region::{Region, RegionUrls, UnknownRegion};
pub use users::WhoAmI;

/// The Clio API minor version this client is written against (`X-API-VERSION`).
pub const API_VERSION: &str = "4.0.13";
