//! A TCP front for one simulator region that can leave connections unanswered, so
//! auth-svc's calls to Clio time out. The simulator's own latency and drop faults only
//! reach `/api/v4`, never the token endpoint a refresh calls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct SilentFront {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// Where answered connections go; set once the simulator is up.
    target: OnceLock<SocketAddr>,
    /// New connections still to leave unanswered.
    to_silence: AtomicU32,
    /// Connections left unanswered so far.
    silenced: AtomicU32,
    /// Bumped to close every open connection (the client's pooled ones included).
    generation: watch::Sender<u64>,
}

impl SilentFront {
    /// Listens on `127.0.0.1:<random>`; nothing is forwarded until [`Self::forward_to`].
    pub async fn start() -> SilentFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target: OnceLock::new(),
            to_silence: AtomicU32::new(0),
            silenced: AtomicU32::new(0),
            generation: watch::channel(0).0,
        });
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, accepting.clone()));
            }
        });
        SilentFront {
            address,
            shared,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Forwards answered connections to the simulator at `base_url` (`http://host:port`).
    pub fn forward_to(&self, base_url: &str) {
        let target = base_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        self.shared.target.set(target).unwrap();
    }

    /// Closes every open connection, then leaves the next `count` new ones unanswered.
    /// Closing matters: a client reusing a pooled connection would never open a new one.
    pub fn silence(&self, count: u32) {
        self.shared.to_silence.store(count, Ordering::SeqCst);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// How many connections were left unanswered so far.
    pub fn silenced(&self) -> u32 {
        self.shared.silenced.load(Ordering::SeqCst)
    }
}

impl Drop for SilentFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let mut closed = shared.generation.subscribe();
    let silence = shared
        .to_silence
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if silence {
        shared.silenced.fetch_add(1, Ordering::SeqCst);
        // Read and never answer, until the client gives up and hangs up.
        let mut sink = [0u8; 4096];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let Some(target) = shared.target.get().copied() else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = closed.changed() => {}
    }
}
