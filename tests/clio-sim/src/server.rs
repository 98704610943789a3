//! Running the simulator: one HTTP listener per region, served by hyper directly so a
//! `drop` fault can close a connection without writing a response.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::AdminClient;
use crate::api::list::{Origin, page_body};
use crate::api::params::Params;
use crate::apps::AppSpec;
use crate::config::{Region, SimConfig};
use crate::region::{self, RegionState};
use crate::resource::Resource;
use crate::routes;

/// Marker a handler puts in a response's extensions to have the connection closed
/// instead of answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// A running simulator. Dropping it stops the listeners too; [`ClioSim::stop`] also
/// waits for open connections to close.
#[derive(Debug)]
pub struct ClioSim {
    regions: BTreeMap<Region, (String, Arc<RegionState>)>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl ClioSim {
    /// Starts every configured region on its own `127.0.0.1:0` listener.
    pub async fn start(config: SimConfig) -> anyhow::Result<ClioSim> {
        ClioSim::start_on(config, IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await
    }

    /// Starts on `listen`; region ports are `base_port + 0..3` in the order us, eu, ca,
    /// au, or free ports when `base_port` is 0.
    pub async fn start_on(
        config: SimConfig,
        listen: IpAddr,
        base_port: u16,
    ) -> anyhow::Result<ClioSim> {
        anyhow::ensure!(
            !config.regions.is_empty(),
            "at least one region must be served"
        );
        let (_shared, states) = region::build(config);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut regions = BTreeMap::new();
        for state in states {
            let offset = u16::try_from(crate::config::region_index(state.region)).unwrap_or(0);
            let port = if base_port == 0 {
                0
            } else {
                base_port.saturating_add(offset)
            };
            let listener = TcpListener::bind(SocketAddr::new(listen, port))
                .await
                .with_context(|| format!("binding {listen}:{port} for region {}", state.region))?;
            let mut address = listener.local_addr()?;
            if address.ip().is_unspecified() {
                address.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            let router = routes::router(state.clone());
            tasks.spawn(accept_loop(
                listener,
                router,
                shutdown.clone(),
                tasks.clone(),
            ));
            regions.insert(state.region, (format!("http://{address}"), state));
        }
        Ok(ClioSim {
            regions,
            shutdown,
            tasks,
        })
    }

    /// The region's base URL (`http://127.0.0.1:PORT`), serving `/oauth`, `/api/v4` and
    /// `/__sim`. A region that is not served gets an address that cannot be reached.
    pub fn base_url(&self, region: Region) -> String {
        self.regions.get(&region).map_or_else(
            || format!("http://{region}.region-not-served.invalid"),
            |(url, _)| url.clone(),
        )
    }

    /// The served regions, in port order.
    pub fn regions(&self) -> Vec<Region> {
        self.regions.keys().copied().collect()
    }

    /// A client of the admin API of this simulator.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(
            self.regions
                .iter()
                .map(|(region, (url, _))| (*region, url.clone()))
                .collect(),
        )
    }

    /// Registers an app without going through HTTP (used by the binary's `--apps`).
    pub fn register_app(&self, region: Region, app: AppSpec) -> anyhow::Result<()> {
        let (_, state) = self
            .regions
            .get(&region)
            .with_context(|| format!("region {region} is not served"))?;
        state.register_app(app);
        Ok(())
    }

    /// A list page produced in-process, without HTTP, authentication or rate limiting:
    /// the generation and serialisation cost alone, as a baseline for benchmarks.
    /// `query` is the query string of `GET /api/v4/{resource}`.
    pub fn list_page_in_process(
        &self,
        region: Region,
        resource: Resource,
        query: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let (url, state) = self
            .regions
            .get(&region)
            .with_context(|| format!("region {region} is not served"))?;
        let params = Params::parse(Some(query));
        let path = resource.index_endpoint();
        let origin = Origin {
            host: url.trim_start_matches("http://"),
            path,
        };
        page_body(&state.data, resource, &params, &origin, &Default::default())
            .map_err(|error| anyhow::anyhow!("{error:?}"))
    }

    /// Stops accepting, closes open connections, stops webhook deliveries and waits
    /// (briefly) for all of it to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        let everything = async {
            for (_, state) in self.regions.values() {
                state.webhooks.stop().await;
            }
            self.tasks.wait().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), everything).await;
    }
}

impl Drop for ClioSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for (_, state) in self.regions.values() {
            state.webhooks.cancel();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut router = router.clone();
                async move {
                    let response = tower::Service::call(&mut router, request.map(Body::new)).await;
                    match response {
                        Ok(response) if response.extensions().get::<DropConnection>().is_some() => {
                            Err(std::io::Error::other("connection dropped by a fault"))
                        }
                        Ok(response) => Ok(response),
                        Err(never) => match never {},
                    }
                }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}
