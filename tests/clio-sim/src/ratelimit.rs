//! Clio's per-access-token rate limit: a fixed window that starts with a token's first
//! request in it, answered with `X-RateLimit-*` headers and, past the limit, `429` with
//! `Retry-After`.
//!
//! Windows run on real time, not the simulated clock: clients pace themselves from
//! `X-RateLimit-Reset` against their own clock, and a clock advanced by hours would make
//! them wait for hours. Every token's window is also tracked when the limit is off, so
//! `max_in_window` still tells how bursty a client was.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::RateLimit;

/// The window used to measure bursts when no limit is configured.
const UNLIMITED_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u64,
    max: u64,
}

/// The limiter's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) limit: u32,
    pub(crate) remaining: u64,
    /// Unix seconds at which the current window ends.
    pub(crate) reset: u64,
    /// Set when the request is over the limit: seconds to wait.
    pub(crate) retry_after: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: Option<RateLimit>,
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> RateLimiter {
        RateLimiter {
            limit,
            windows: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request of the token; `None` when the limit is off.
    pub(crate) fn check(&self, token_id: &str) -> Option<Verdict> {
        let length = self.limit.map_or(UNLIMITED_WINDOW, |limit| limit.window);
        let now = Instant::now();
        let mut windows = self.lock();
        let window = windows.entry(token_id.to_owned()).or_insert(Window {
            started: now,
            count: 0,
            max: 0,
        });
        if now.duration_since(window.started) >= length {
            window.started = now;
            window.count = 0;
        }
        window.count += 1;
        window.max = window.max.max(window.count);
        let limit = self.limit?;
        let left = length.saturating_sub(now.duration_since(window.started));
        let reset_at = SystemTime::now() + left;
        let reset = reset_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let over = window.count > u64::from(limit.limit);
        Some(Verdict {
            limit: limit.limit,
            remaining: u64::from(limit.limit).saturating_sub(window.count),
            reset,
            retry_after: over.then(|| (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)),
        })
    }

    /// The most requests one window saw, per token id.
    pub(crate) fn max_in_window(&self) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .map(|(token, window)| (token.clone(), window.max))
            .collect()
    }

    /// Forgets the recorded maxima (with the call counters), keeping current windows.
    pub(crate) fn reset_max(&self) {
        for window in self.lock().values_mut() {
            window.max = window.count;
        }
    }

    /// Starts every token's window afresh, as if a window had just ended.
    pub(crate) fn reset_windows(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn past_the_limit_the_verdict_asks_to_retry_after_the_window() {
        let limiter = RateLimiter::new(Some(RateLimit {
            limit: 2,
            window: Duration::from_secs(30),
        }));
        assert_eq!(limiter.check("t").unwrap().remaining, 1);
        assert_eq!(limiter.check("t").unwrap().retry_after, None);
        let over = limiter.check("t").unwrap();
        assert_eq!(over.remaining, 0);
        assert!((1..=30).contains(&over.retry_after.unwrap()));
        assert_eq!(limiter.check("other").unwrap().remaining, 1);
        assert_eq!(limiter.max_in_window()["t"], 3);
    }

    #[test]
    fn off_means_no_verdict_but_bursts_are_still_measured() {
        let limiter = RateLimiter::new(None);
        assert_eq!(limiter.check("t"), None);
        assert_eq!(limiter.check("t"), None);
        assert_eq!(limiter.max_in_window()["t"], 2);
    }
}
