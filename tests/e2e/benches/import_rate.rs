//! How close a rate-limited import gets to the limit's throughput (issue 6: within 5%),
//! and that it never goes over.
//!
//! `cargo bench -p e2e --bench import_rate` starts the whole stack in-process, with the
//! simulator enforcing Clio's documented limit (50 requests per 60 s per token; set
//! `IMPORT_RATE_WINDOW_SECS` for a shorter window), and imports exactly enough contacts
//! that the token's requests (the connect's `who_am_i` plus one per page) fill two whole
//! windows and open a third. A perfectly paced client sends the first request of the third
//! window exactly two windows after its first request, so
//! `ratio = 2 windows / measured time` is the share of the limit's throughput achieved.
//! The baseline, measured in the same run, is the same import with the limit off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clio_sim::{DatasetSize, RateLimit, Region, SimConfig};

#[allow(dead_code, reason = "the test helpers are shared with tests/it")]
#[path = "../tests/it/services.rs"]
mod services;
#[allow(dead_code, reason = "the test helpers are shared with tests/it")]
#[path = "../tests/it/stack.rs"]
mod stack;

use stack::{Stack, StackSetup, full_job};

const LIMIT: u32 = 50;
const PAGE: u64 = 200;

fn window() -> Duration {
    let secs = std::env::var("IMPORT_RATE_WINDOW_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// One import of `pages` pages of contacts; returns (seconds from the connect's first
/// Clio call to the job's end, Clio requests the token made, most requests in one window,
/// 429s).
async fn import(pages: u64, rate_limit: Option<RateLimit>) -> (f64, u64, u64, u64) {
    let stack = Stack::start(
        "bench-rate",
        StackSetup {
            sim: SimConfig {
                regions: vec![Region::Us],
                rate_limit,
                dataset: DatasetSize {
                    contacts: pages * PAGE,
                    ..DatasetSize::default()
                },
                ..SimConfig::default()
            },
            import: Box::new(|config| config.importer.rate_limit_reserve = 0),
            ..StackSetup::default()
        },
    )
    .await;
    let started = Instant::now();
    let connection = stack
        .connect(&["contacts:read"], "bench@firm.example", 1)
        .await;
    let job = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job, Duration::from_secs(600)).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        done.status,
        proto::imports::v1::JobStatus::Completed as i32,
        "{}",
        done.failure_reason
    );
    let calls = stack.sim.admin().calls().await.unwrap();
    let requests = calls.total_api_calls();
    let busiest = calls.max_in_window.values().copied().max().unwrap_or(0);
    let throttled: u64 = calls.api.iter().map(|c| c.status_429).sum();
    stack.stop().await;
    (elapsed, requests, busiest, throttled)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let window = window();
    // who_am_i at connect + pages = 2 windows + 1 request.
    let pages = u64::from(2 * LIMIT);
    println!(
        "import_rate: {pages} pages of {PAGE} contacts, limit {LIMIT} requests per {}s",
        window.as_secs()
    );

    let (baseline, _, _, _) = import(pages, None).await;
    println!(
        "baseline (no limit): {:.2}s, {:.1} requests/s",
        baseline,
        (pages + 1) as f64 / baseline
    );

    let limit = RateLimit {
        limit: LIMIT,
        window,
    };
    let (elapsed, requests, busiest, throttled) = import(pages, Some(limit)).await;
    let windows_needed = requests.div_ceil(u64::from(LIMIT));
    let ideal = (windows_needed - 1) as f64 * window.as_secs_f64();
    let limit_rate = f64::from(LIMIT) / window.as_secs_f64();
    let achieved = (requests - 1) as f64 / elapsed;
    println!("rate-limited: {requests} requests in {elapsed:.2}s (ideal {ideal:.0}s)");
    println!(
        "throughput: {achieved:.3} requests/s against a limit of {limit_rate:.3}/s: ratio {:.3} (target >= 0.95)",
        ideal / elapsed
    );
    println!("most requests in one window: {busiest} (limit {LIMIT}); 429 answers: {throttled}");
    println!(
        "slowdown against the unlimited baseline: {:.1}x",
        elapsed / baseline
    );
}
