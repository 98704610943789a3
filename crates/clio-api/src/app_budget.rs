//! Clio's limit on one application as a whole, across all its tokens.
//!
//! Unlike the per-token limit ([`crate::rate_gate`]), which each response reports in its
//! headers, an application's budget is shared by every connection and every process using
//! the app, so it is kept where all of them see it; this crate only asks. A caller passes
//! the app's budget with each request, and every request sent takes one place in it first.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The budget of one Clio app.
pub trait AppBudget: Send + Sync {
    /// Waits until one more request of the app fits its budget and takes that place.
    /// Returns how long it waited (zero when a place was free).
    fn acquire(&self) -> Pin<Box<dyn Future<Output = Duration> + Send + '_>>;
}
