//! A service's background work, and the one order a service stops in.
//!
//! Every service stops the same way once its shutdown token is cancelled:
//!
//! 1. gRPC health goes NOT_SERVING, so balancers stop sending new calls ([`crate::server`]);
//! 2. the listener stops accepting and in-flight calls drain, for at most
//!    `service.shutdown_grace_ms`;
//! 3. background tasks stop, stage by stage ([`Background::stop`]): work that produces
//!    events (job consumers, refresh loops) before what delivers them (the audit relay),
//!    so nothing a stage writes is left undelivered by the next;
//! 4. the database pool closes.
//!
//! A stage is a [`Background`]: tasks spawned on one `TaskTracker`, each told to stop by
//! the stage's token and awaited, with a warning naming any that did not stop in time.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{SharedClock, system_clock};

/// How long a stage's tasks get to stop before the service moves on without them.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// One stage of background tasks, stopped together.
#[derive(Debug, Clone)]
pub struct Background {
    name: &'static str,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Background {
    /// An empty stage; `name` appears in the warning of a stop that timed out.
    pub fn new(name: &'static str) -> Self {
        Background {
            name,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// The token this stage's tasks watch: cancelled when the stage stops.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` until it ends; it should end soon after [`Background::token`] is
    /// cancelled.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Tells every task to stop and waits for them, at most [`STOP_GRACE`].
    pub async fn stop(self) {
        self.stop_within(STOP_GRACE).await;
    }

    /// [`Background::stop`] for tasks that take longer to finish by design (a consumer
    /// handing its in-flight jobs back within `service.shutdown_grace_ms`).
    pub async fn stop_within(self, grace: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                stage = self.name,
                still_running = self.tracker.len(),
                "background tasks did not stop in time"
            );
        }
    }
}

/// What tests may swap when running a service (`run_with`); [`Default`] is production.
#[derive(Clone)]
pub struct Options {
    /// The clock every expiry, age and recorded time is judged by.
    pub clock: SharedClock,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn stop_waits_for_tasks_that_watch_the_token() {
        let stage = Background::new("test");
        let finished = Arc::new(AtomicBool::new(false));
        let (token, done) = (stage.token(), finished.clone());
        stage.spawn(async move {
            token.cancelled().await;
            // Some last work after the signal, which stop must wait for.
            tokio::task::yield_now().await;
            done.store(true, Ordering::SeqCst);
        });
        stage.stop().await;
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_token_does_not_hold_the_stop_forever() {
        let stage = Background::new("test");
        stage.spawn(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        stage.stop().await;
        assert!(started.elapsed() >= STOP_GRACE);
    }
}
