//! When to try a Clio call again: how long Clio asked us to wait (`Retry-After`), and
//! capped exponential backoff with jitter when it did not say.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

/// The longest single wait for a 429 or a backoff, whatever the server says.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// The backoff before the exponent is capped (before jitter).
const MAX_BACKOFF_MS: u64 = 30_000;

/// `Retry-After` in seconds (Clio does not send the HTTP-date form).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Exponential backoff with full jitter: `base * 2^(attempt-1)`, capped at 30 s, times
/// [0.5, 1), and never over [`MAX_WAIT`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF_MS);
    let jittered = rand::thread_rng().gen_range(capped / 2..=capped.max(1));
    Duration::from_millis(jittered).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(200);
        assert!(backoff(base, 1) <= Duration::from_millis(200));
        assert!(backoff(base, 3) >= Duration::from_millis(400));
        assert!(backoff(base, 40) <= Duration::from_secs(30));
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
