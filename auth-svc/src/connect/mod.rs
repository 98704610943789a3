//! Connecting a person: starting an authorization (state, PKCE, authorize URL) and
//! completing it (code exchange, who_am_i, storing the connection and the consent).
//!
//! The `state` is 32 random bytes; only its SHA-256 is stored. It is single use (consumed
//! by one conditional UPDATE), expires by the injected clock, and carries the principal,
//! app, mode and redirect URI it was started with, so completion never trusts the caller
//! for them. The redirect URI is stored and sent again byte for byte at the exchange.
//!
//! A state is also bound to how it may be completed: CompleteAuthorization only by the
//! service credential that started it, and the unauthenticated web callback only for
//! web-mode states (otherwise a caller could complete another's out-of-band flow through
//! the callback). A refused completer does not use the state up: it is refused before any
//! side effect, so the caller that started the flow can still finish it, and the state
//! stays single use for that caller.
//!
//! [`start()`] begins an authorization and [`complete()`] finishes it; [`refusals`] says why
//! a state cannot be used and records refused completions; [`grant`] stores what Clio
//! granted as a connection.

mod complete;
mod grant;
mod refusals;
mod start;

use clio_api::ClioError;
use sha2::{Digest, Sha256};

use crate::apps::App;
use crate::domain::AppStatus;
use crate::error::AuthError;

pub use complete::{Answer, Completer, complete, parse_pasted};
pub use start::{StartRequest, start};

/// The state as stored: its SHA-256.
pub(crate) fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

fn require_approved(app: &App) -> Result<(), AuthError> {
    match app.status {
        AppStatus::Approved => Ok(()),
        AppStatus::PendingApproval => Err(AuthError::FailedPrecondition(format!(
            "app {} is waiting for compliance approval",
            app.id
        ))),
        AppStatus::Revoked => Err(AuthError::FailedPrecondition(format!(
            "app {} is revoked",
            app.id
        ))),
        AppStatus::Rejected => Err(AuthError::FailedPrecondition(format!(
            "app {} was rejected by compliance",
            app.id
        ))),
    }
}

/// Maps a Clio failure outside the code exchange.
pub fn clio_failure(what: &str, error: ClioError) -> AuthError {
    if error.is_retryable() {
        AuthError::ClioUnavailable(format!("{what}: {error}"))
    } else {
        AuthError::FailedPrecondition(format!("{what}: {error}"))
    }
}
