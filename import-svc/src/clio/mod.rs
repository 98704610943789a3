//! Reading Clio's API v4 for imports: which fields to ask for ([`fields`]), pacing each
//! token within its rate limit ([`rate_gate`]) and fetching pages with retries ([`fetch`]).

pub mod fetch;
pub mod fields;
pub mod rate_gate;
