//! A TCP proxy a test can cut and restore, to put a dependency "down" without touching
//! the machine's shared Postgres or RabbitMQ (which other tests are using).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    /// True while the proxy holds connections open but forwards nothing (a hung peer).
    stalled: watch::Sender<bool>,
    /// Bumped on every cut so live connections close.
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<random>` to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let accept_up = up.clone();
        let accept_generation = generation.clone();
        let accept_stalled = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = accept_generation.subscribe();
                let mut stall = accept_stalled.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        stalled = async { stall.wait_for(|stalled| *stalled).await.is_ok() } => {
                            if !stalled {
                                return;
                            }
                            // Hung: both sockets stay open and silent until a cut.
                            let _ = cut.changed().await;
                        }
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy {
            address,
            up,
            stalled,
            generation,
            task,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding on every open connection while keeping it open: the peer looks
    /// alive and answers nothing (a hung broker or database). Ended by [`TcpProxy::cut`].
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
