//! Rate-limited imports against the limit's own bound (the method of
//! `tests/e2e/benches/import_rate.rs`): the simulator enforces a fixed window of `limit`
//! requests per token, and each token makes exactly enough requests (the connect's
//! `who_am_i` plus one per page) to fill `windows` whole windows and open the next. A
//! perfectly paced client sends that last request exactly `windows` windows after its
//! first, so `windows × window / measured time` is the share of the bound achieved.
//!
//! With several tokens (connections of different Clio users, one job each on one
//! import-svc) each token's time runs from its connect to its job's completion; the row
//! compares the sum of the tokens' request rates with the sum of their bounds.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clio_sim::{DatasetSize, RateLimit, Region, SimConfig};

use crate::import_host::{ImportHost, ImportSvc, full_job, pool_for_jobs};
use crate::platform::Platform;
use crate::row::{Row, Target};

#[derive(Debug, Clone)]
pub struct RateOptions {
    /// Requests per window per token (Clio: 50).
    pub limit: u32,
    /// The window (Clio: 60 s). Clio announces the reset in whole seconds, so a client
    /// may lose up to a second a window: short windows understate the pacing.
    pub window: Duration,
    /// Whole windows each token fills.
    pub windows: u32,
    /// Records per page (import-svc's `importer.page_size`).
    pub page_size: u32,
    /// The token counts measured, one row each (the issue's: 1 and 20).
    pub tokens: Vec<usize>,
    pub host: ImportHost,
}

/// One token's run.
#[derive(Debug, Clone, Copy)]
pub struct TokenRun {
    pub requests: u64,
    pub elapsed: Duration,
    pub busiest_window: u64,
    pub throttled: u64,
}

impl TokenRun {
    /// The shortest time a client within the limit could make these requests in.
    pub fn ideal(&self, options: &RateOptions) -> Duration {
        let windows = self
            .requests
            .div_ceil(u64::from(options.limit))
            .saturating_sub(1);
        options.window * u32::try_from(windows).unwrap_or(u32::MAX)
    }
}

pub async fn run(options: &RateOptions) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &tokens in &options.tokens {
        let runs = run_tokens(options, tokens).await?;
        rows.push(row(options, tokens, &runs));
    }
    Ok(rows)
}

fn sim_config(options: &RateOptions, tokens: usize) -> SimConfig {
    let pages = u64::from(options.windows * options.limit);
    SimConfig {
        regions: vec![Region::Us],
        rate_limit: Some(RateLimit {
            limit: options.limit,
            window: options.window,
        }),
        dataset: DatasetSize {
            contacts: pages * u64::from(options.page_size),
            users: (tokens as u64).max(5),
            ..DatasetSize::default()
        },
        ..SimConfig::default()
    }
}

/// `tokens` connections, each connected and then given its job at once (its window starts
/// with the connect's first request).
pub async fn run_tokens(options: &RateOptions, tokens: usize) -> Result<Vec<TokenRun>> {
    let platform = Platform::start(sim_config(options, tokens)).await?;
    let import = ImportSvc::start(&platform, &options.host, |config| {
        // Both bounds: the consumer holds at most `prefetch` jobs and runs at most
        // `max_concurrent_jobs` of them (the defaults, 4 each, would queue the rest).
        config.importer.max_concurrent_jobs = tokens;
        config.amqp.prefetch = u16::try_from(tokens).unwrap_or(u16::MAX);
        // The default pool (10) would leave 20 jobs queueing for a connection to write.
        config.service.database.max_connections = pool_for_jobs(tokens);
        config.importer.page_size = options.page_size;
    })
    .await;
    let measured = match import {
        Ok(import) => {
            let measured = measure(&platform, &import, options, tokens).await;
            import.stop().await?;
            measured
        }
        Err(error) => Err(error),
    };
    platform.stop().await?;
    measured
}

async fn measure(
    platform: &Platform,
    import: &ImportSvc,
    options: &RateOptions,
    tokens: usize,
) -> Result<Vec<TokenRun>> {
    let mut started = Vec::with_capacity(tokens);
    let mut connections = Vec::with_capacity(tokens);
    let mut jobs = Vec::with_capacity(tokens);
    for i in 0..tokens {
        started.push(Instant::now());
        let user = i64::try_from(i + 1)?;
        let connection = platform
            .connect(&["contacts:read"], &format!("rate-{i}@firm.example"), user)
            .await
            .with_context(|| format!("connect user {user}"))?;
        jobs.push(import.submit(full_job(&connection, &["contacts"])).await?);
        connections.push(connection);
    }
    let within = options.window * (options.windows + 2) * 3 + Duration::from_secs(60);
    let done = import.all_completed(&jobs, within).await?;
    let calls = platform.sim.admin().calls().await?;
    let records = u64::from(options.windows * options.limit) * u64::from(options.page_size);
    let stored = import.stored("contacts").await?;
    if stored != records as i64 {
        bail!("import-svc stored {stored} contacts of {records}");
    }
    let mut runs = Vec::with_capacity(tokens);
    for ((connection, start), (_, finished)) in connections.iter().zip(started).zip(done) {
        // The token import-svc used: a lease hands out the connection's current token.
        let token = platform
            .lease(connection, &["contacts:read"])
            .await?
            .access_token;
        runs.push(TokenRun {
            requests: calls.api_calls_for(&token),
            elapsed: finished.duration_since(start),
            busiest_window: calls.max_in_window_for(&token),
            throttled: calls.status_429_for(&token),
        });
    }
    Ok(runs)
}

fn row(options: &RateOptions, tokens: usize, runs: &[TokenRun]) -> Row {
    let rate = |requests: u64, time: Duration| requests as f64 / time.as_secs_f64().max(1e-9);
    let achieved: f64 = runs.iter().map(|r| rate(r.requests, r.elapsed)).sum();
    let bound: f64 = runs
        .iter()
        .map(|r| rate(r.requests, r.ideal(options)))
        .sum();
    let worst = runs
        .iter()
        .map(|r| r.ideal(options).as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9))
        .fold(f64::INFINITY, f64::min);
    let busiest = runs.iter().map(|r| r.busiest_window).max().unwrap_or(0);
    let throttled: u64 = runs.iter().map(|r| r.throttled).sum();
    let window = options.window.as_secs_f64();
    let (path, target) = match tokens {
        1 => ("rate-limited import, 1 token".to_owned(), 0.98),
        n => (format!("rate-limited import, {n} tokens at once"), 0.95),
    };
    Row::new(path, achieved, "requests/s")
        .against(
            format!(
                "the limit's bound ({} per {window} s per token)",
                options.limit
            ),
            bound,
            "requests/s",
        )
        .target(Target::RatioAtLeast { min: target })
        .command(format!(
            "cargo run --release -p load -- rate-limited --limit {} --window-secs {window} \
             --tokens {tokens}",
            options.limit
        ))
        .note(format!(
            "{} windows per token, {} records a page; worst token {:.3} of its bound; most \
             requests in one window {busiest} (limit {}); 429 answers {throttled}",
            options.windows, options.page_size, worst, options.limit
        ))
}
