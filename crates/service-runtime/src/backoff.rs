//! Capped exponential backoff: the one rule every retry loop of the services waits by.
//! (The Clio client, which depends on none of this crate, has its own with jitter and
//! Retry-After in `clio_api::retry`.)

use std::time::Duration;

/// `first * 2^(attempt-1)` for attempt 1, 2, 3, ..., never over `cap`. Attempt 0 counts
/// as 1, and the doubling stops growing well before it could overflow.
pub fn doubling(first: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    first.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_wait_and_stops_at_the_cap() {
        let first = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let waits: Vec<u128> = (0..8)
            .map(|attempt| doubling(first, attempt, cap).as_millis())
            .collect();
        assert_eq!(waits, [100, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(doubling(first, u32::MAX, cap), cap);
        assert_eq!(
            doubling(Duration::MAX, 40, Duration::MAX),
            Duration::MAX,
            "saturates instead of overflowing"
        );
    }
}
