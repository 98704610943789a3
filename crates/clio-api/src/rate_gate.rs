//! Pacing one access token within Clio's per-token rate limit.
//!
//! Clio tells every response how many requests remain in the window and when it resets
//! (`X-RateLimit-Remaining`, `X-RateLimit-Reset`). A gate keeps that per token and makes a
//! caller wait for the reset instead of spending a request on a 429. Callers of the same
//! token queue on a fair (FIFO) lock, so one job's pages cannot starve another job on the
//! same connection; different tokens never wait on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Time past the announced reset before spending the new window: Clio's reset is in whole
/// seconds, and arriving a hair early costs a 429.
const RESET_MARGIN: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Window {
    /// Requests we may still send in the current window (None: unknown, go ahead).
    remaining: Option<u32>,
    /// The window's end, as Clio announced it (unix seconds).
    reset_unix: Option<u64>,
    /// When that end is, on our clock.
    reset_at: Option<Instant>,
    /// After a 429, nobody sends before this.
    blocked_until: Option<Instant>,
}

/// The gate of one token.
#[derive(Debug, Default)]
pub struct RateGate {
    window: tokio::sync::Mutex<Window>,
}

impl RateGate {
    /// Waits until a request may be sent, keeping `reserve` requests unused. Returns how
    /// long it waited: zero unless it slept for the window or queued behind a caller
    /// that did, so a caller can count the requests the rate limit held back.
    pub async fn acquire(&self, reserve: u32) -> Duration {
        let started = Instant::now();
        let (mut window, mut held_back) = match self.window.try_lock() {
            Ok(window) => (window, false),
            Err(_) => (self.window.lock().await, true),
        };
        if let Some(until) = window.blocked_until.take()
            && until > Instant::now()
        {
            tokio::time::sleep_until(until).await;
            held_back = true;
        }
        if let (Some(remaining), Some(reset_at)) = (window.remaining, window.reset_at)
            && remaining <= reserve
        {
            if reset_at > Instant::now() {
                tokio::time::sleep_until(reset_at + RESET_MARGIN).await;
                held_back = true;
            }
            // A new window: the next response tells us its size.
            window.remaining = None;
            window.reset_at = None;
        }
        if let Some(remaining) = window.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
        }
        if held_back {
            started.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Takes in what a response said about the window.
    pub fn observe(&self, remaining: Option<u32>, reset_unix: Option<u64>) {
        let Ok(mut window) = self.window.try_lock() else {
            // Someone holds the gate (waiting or counting); their own response will update
            // it. Skipping an update only makes us more conservative, never less.
            return;
        };
        let (Some(remaining), Some(reset_unix)) = (remaining, reset_unix) else {
            return;
        };
        let new_window = window.reset_unix != Some(reset_unix);
        window.remaining = Some(match (new_window, window.remaining) {
            // Responses of one window can arrive out of order: trust the lowest count.
            (false, Some(local)) => local.min(remaining),
            _ => remaining,
        });
        window.reset_unix = Some(reset_unix);
        window.reset_at = Some(instant_of_unix(reset_unix));
    }

    /// After a 429: nobody on this token sends for `retry_after`.
    pub async fn block_for(&self, retry_after: Duration) {
        let mut window = self.window.lock().await;
        let until = Instant::now() + retry_after;
        window.blocked_until = Some(window.blocked_until.map_or(until, |b| b.max(until)));
        window.remaining = None;
        window.reset_at = None;
    }
}

fn instant_of_unix(unix_seconds: u64) -> Instant {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let target = Duration::from_secs(unix_seconds);
    Instant::now() + target.saturating_sub(now_unix)
}

/// One gate per token key (the connection id: one token per connection).
#[derive(Debug, Default, Clone)]
pub struct RateGates {
    gates: Arc<Mutex<HashMap<String, Arc<RateGate>>>>,
}

impl RateGates {
    pub fn gate(&self, key: &str) -> Arc<RateGate> {
        let mut gates = match self.gates.lock() {
            Ok(gates) => gates,
            Err(poisoned) => poisoned.into_inner(),
        };
        gates.entry(key.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    //! On tokio's paused clock: waits are measured in virtual time, exactly, however busy
    //! the machine is.
    use super::*;

    fn unix_in(seconds: u64) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + seconds
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_reset_when_the_window_is_spent() {
        let gate = RateGate::default();
        gate.observe(Some(1), Some(unix_in(1)));
        let first = gate.acquire(0).await;
        assert_eq!(first, Duration::ZERO);
        // Remaining is now 0: the next acquire waits for the reset.
        let waited = gate.acquire(0).await;
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_responses_do_not_raise_the_count() {
        let gate = RateGate::default();
        let reset = unix_in(30);
        gate.observe(Some(5), Some(reset));
        gate.observe(Some(9), Some(reset));
        for _ in 0..5 {
            gate.acquire(0).await;
        }
        let waited = tokio::time::timeout(Duration::from_millis(200), gate.acquire(0)).await;
        assert!(
            waited.is_err(),
            "a sixth request in the window went through"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_blocks_everyone_on_the_token() {
        let gate = RateGate::default();
        gate.block_for(Duration::from_millis(150)).await;
        let waited = gate.acquire(0).await;
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }
}
