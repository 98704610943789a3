//! Clio's OAuth 2.0 server: authorize (with the consent decision), the out-of-band approval
//! page, the token endpoint and deauthorize.

pub(crate) mod authorize;
mod pages;
pub(crate) mod store;
pub(crate) mod token;

pub use authorize::{ConsentOutcome, Decision};
