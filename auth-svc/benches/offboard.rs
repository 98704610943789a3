//! How long offboarding a person with 50 connections takes (issue 5: "well under a
//! second" against the simulator).
//!
//! `cargo bench -p auth-svc --bench offboard` starts auth-svc in-process on its own fresh
//! database with the Clio simulator (US and EU), connects one person 50 times (5 apps in
//! each region, 5 Clio users each), and times `OffboardUser`. The baseline, measured in the
//! same run on the same stack, is a second person's 50 connections revoked one
//! `RevokeConnection` call at a time: the ratio shows what revoking them together saves.
//! Each measurement is repeated `OFFBOARD_BENCH_ROUNDS` times (default 3) with new people.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proto::auth::v1 as pb;

#[allow(dead_code, reason = "the test helpers are shared with tests/it")]
#[path = "../tests/it/support.rs"]
mod support;

use support::{Setup, Stack};

const APPS_PER_REGION: usize = 5;
const USERS_PER_APP: i64 = 5;

fn rounds() -> usize {
    std::env::var("OFFBOARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn all_revoked(results: &[pb::RevocationResult]) -> bool {
    results
        .iter()
        .all(|r| r.clio_outcome == pb::ClioRevocationOutcome::Revoked as i32)
}

/// One person's connections revoked together by `OffboardUser`.
async fn offboard(stack: &Stack, person: &str) -> Duration {
    let (_, ids) = stack
        .many_connections(person, APPS_PER_REGION, USERS_PER_APP)
        .await;
    let started = Instant::now();
    let response = stack.offboard(person).await;
    let took = started.elapsed();
    assert_eq!(response.results.len(), ids.len());
    assert!(all_revoked(&response.results), "{response:?}");
    took
}

/// The baseline: one person's connections revoked one call at a time.
async fn one_by_one(stack: &Stack, person: &str) -> Duration {
    let (_, ids) = stack
        .many_connections(person, APPS_PER_REGION, USERS_PER_APP)
        .await;
    let started = Instant::now();
    let mut results = Vec::with_capacity(ids.len());
    for id in &ids {
        results.push(stack.revoke(id).await);
    }
    let took = started.elapsed();
    assert!(all_revoked(&results), "{results:?}");
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stack = support::start(Setup::default()).await;
        let connections = 2 * APPS_PER_REGION * USERS_PER_APP as usize;
        let mut together = Vec::new();
        let mut separately = Vec::new();
        for round in 0..rounds() {
            together.push(offboard(&stack, &format!("leaver-{round}@firm")).await);
            separately.push(one_by_one(&stack, &format!("mover-{round}@firm")).await);
        }
        let best = |v: &[Duration]| v.iter().min().copied().unwrap();
        let worst = |v: &[Duration]| v.iter().max().copied().unwrap();
        println!(
            "offboard: OffboardUser of {connections} connections (US + EU, Clio deauthorize each): \
             best {:.0} ms, worst {:.0} ms over {} rounds (target: well under 1,000 ms)",
            ms(best(&together)),
            ms(worst(&together)),
            together.len()
        );
        println!(
            "offboard baseline: the same number of RevokeConnection calls one at a time: \
             best {:.0} ms, worst {:.0} ms; offboard/baseline = {:.2}",
            ms(best(&separately)),
            ms(worst(&separately)),
            ms(best(&together)) / ms(best(&separately))
        );
        stack.stop().await;
    });
}
