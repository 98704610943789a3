//! Reading Clio's API v4 for imports: which fields to ask for ([`fields`]), pacing each
//! token within its rate limit ([`rate_gate`]), fetching pages with retries ([`fetch`])
//! and checking each record of a page on its own ([`record_check`]).

pub mod fetch;
pub mod fields;
pub mod rate_gate;
pub mod record_check;
