//! The simulated clock.
//!
//! It is wall-clock time plus an offset that tests move forward with `advance_clock`, so
//! expiry can be tested without sleeping. It governs authorization-code expiry,
//! access-token expiry and the `updated_at` stamped on edited records. Rate-limit windows
//! deliberately stay on real time: clients pace themselves from `X-RateLimit-Reset` against
//! their own clock, and a clock jumped by days would make them wait for days. Tests reset
//! windows with the admin `reset_rate_limits` instead.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Default)]
pub(crate) struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let offset = TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        Utc::now() + offset
    }

    /// Moves simulated time forward; it never goes back, so issued expiries stay ordered.
    pub(crate) fn advance(&self, by: Duration) -> DateTime<Utc> {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.now()
    }
}

/// Adds a std duration to a timestamp, saturating instead of panicking on absurd input.
pub(crate) fn after(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(by)
        .ok()
        .and_then(|delta| at.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
