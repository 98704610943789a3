//! Waiting for eventual outcomes without bare sleeps.

use std::future::Future;
use std::time::Duration;

/// Calls `probe` every `interval` until it returns `Some`, or panics with `what` after
/// `deadline`.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}
