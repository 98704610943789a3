//! `clio-sim`: the Clio simulator as a standalone process, for the local stack and
//! benchmarks. Prints one `region=us url=http://...` line per region once listening.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clio_sim::{AppSpec, ClioSim, DatasetSize, RateLimit, Region, SimConfig, WebhookConfig};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(about = "Simulator of Clio Manage's OAuth server and API v4")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: IpAddr,
    /// First port; regions get base+0..3 in the order us, eu, ca, au. 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Regions to serve, comma-separated.
    #[arg(long, default_value = "us,eu,ca,au", value_delimiter = ',')]
    regions: Vec<Region>,
    /// Records per resource (users: at most 2,000).
    #[arg(long, default_value_t = 2_000)]
    size: u64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per-token rate limit as `N/<seconds>s` (or `N/<minutes>m`), or `off`.
    #[arg(long, default_value = "50/60s", value_parser = parse_rate_limit)]
    rate_limit: Limit,
    /// Limit on each app as a whole (all its tokens in a region), same format; off by
    /// default.
    #[arg(long, default_value = "off", value_parser = parse_rate_limit)]
    app_rate_limit: Limit,
    /// Accept `http://` webhook URLs on loopback (Clio takes https only).
    #[arg(long)]
    webhooks_allow_http: bool,
    /// Waits before webhook retries, in milliseconds, comma-separated (default: Clio's
    /// 2, 4, 8, 16 and 32 minutes).
    #[arg(long, value_delimiter = ',')]
    webhook_retry_delays_ms: Option<Vec<u64>>,
    /// `expires_in` of access tokens, in seconds.
    #[arg(long, default_value_t = 2_592_000)]
    token_ttl: u64,
    /// Issue a new refresh token on every refresh.
    #[arg(long)]
    rotate_refresh_tokens: bool,
    /// JSON array of apps (`AppSpec` plus `region`) to register at start.
    #[arg(long)]
    apps: Option<PathBuf>,
}

/// A parsed `--rate-limit` (clap needs a `Clone` value type).
#[derive(Clone, Debug)]
struct Limit(Option<RateLimit>);

fn parse_rate_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Limit(None));
    }
    let bad = || format!("expected N/<secs>s, N/<mins>m or off, got {text:?}");
    let (limit, window) = text.split_once('/').ok_or_else(bad)?;
    let limit: u32 = limit.trim().parse().map_err(|_| bad())?;
    let window = window.trim();
    let (number, unit) = window.split_at(window.len().saturating_sub(1));
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        _ => return Err(bad()),
    };
    if limit == 0 || seconds == 0 {
        return Err(bad());
    }
    Ok(Limit(Some(RateLimit {
        limit,
        window: Duration::from_secs(seconds),
    })))
}

#[derive(Deserialize)]
struct RegionalApp {
    region: Region,
    #[serde(flatten)]
    app: AppSpec,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let apps: Vec<RegionalApp> = match &args.apps {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --apps {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("parsing --apps {}", path.display()))?
        }
        None => Vec::new(),
    };
    let mut dataset = DatasetSize::uniform(args.size);
    dataset.users = args.size.clamp(1, 2_000);
    let defaults = WebhookConfig::default();
    let webhooks = WebhookConfig {
        allow_http: args.webhooks_allow_http,
        retry_delays: args
            .webhook_retry_delays_ms
            .as_ref()
            .map_or(defaults.retry_delays.clone(), |delays| {
                delays.iter().copied().map(Duration::from_millis).collect()
            }),
        ..defaults
    };
    let config = SimConfig {
        regions: args.regions.clone(),
        seed: args.seed,
        dataset,
        rate_limit: args.rate_limit.0,
        app_rate_limit: args.app_rate_limit.0,
        webhooks,
        access_token_ttl: Duration::from_secs(args.token_ttl),
        rotate_refresh_tokens: args.rotate_refresh_tokens,
        ..SimConfig::default()
    };
    let sim = ClioSim::start_on(config, args.listen, args.base_port).await?;
    for entry in apps {
        sim.register_app(entry.region, entry.app)?;
    }
    for region in sim.regions() {
        println!("region={region} url={}", sim.base_url(region));
    }
    shutdown_signal().await;
    sim.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
