//! Starting a service in-process on `127.0.0.1:0`: the one launcher every test uses.
//!
//! A service is `run(config, listener, shutdown)`; tests hand [`spawn_service`] a closure
//! that builds the config (it may read the listener's address first, for URLs that point
//! back at the service) and calls `run` or `run_with`.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// A service task started by [`spawn_service`] or [`SpawnedService::start`].
pub struct SpawnedService {
    pub address: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl SpawnedService {
    /// Starts `run` on a fresh port without waiting for it: for tests that watch a
    /// service come up (or fail to), or that probe readiness their own way (mTLS).
    pub async fn start<F, Fut>(run: F) -> SpawnedService
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, shutdown.clone()));
        SpawnedService {
            address,
            shutdown,
            task,
        }
    }

    /// Cancels the service and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("service task panicked")
    }
}

/// Starts `run` on a fresh port and returns once the service reports SERVING.
pub async fn spawn_service<F, Fut>(run: F) -> SpawnedService
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let service = SpawnedService::start(run).await;
    crate::wait_for_health(service.address, "", ServingStatus::Serving).await;
    service
}
