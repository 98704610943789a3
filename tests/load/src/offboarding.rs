//! Offboarding a person with many connections: `OffboardUser` revokes every one of them
//! (at Clio, the simulator, and in auth-svc) and answers when all are done. The issue's
//! target is absolute (< 300 ms for 100 connections); there is no reference to hold it
//! against.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::future::try_join_all;
use harness::{token_of, with_bearer};
use proto::auth::v1 as auth;

use crate::platform::{Platform, TENANT, unlimited_sim};
use crate::row::{Row, Target};

const PRINCIPAL: &str = "leaver@firm.example";
/// Connections made at once while setting up (each is a few RPCs and a consent).
const CONNECT_CONCURRENCY: usize = 10;
const NOTE: &str = "one person connected through as many apps; every connection revoked at the \
                    simulator and in auth-svc before the answer";

pub async fn run(connections: usize) -> Result<Row> {
    let platform = Platform::start(unlimited_sim(50)).await?;
    let measured = measure(&platform, connections).await;
    platform.stop().await?;
    let elapsed = measured?;
    Ok(Row::new(
        format!("OffboardUser, {connections} connections"),
        elapsed.as_secs_f64() * 1_000.0,
        "ms",
    )
    .target(Target::FigureBelow { max: 300.0 })
    .command(format!(
        "cargo run --release -p load -- offboarding --connections {connections}"
    ))
    .note(NOTE))
}

async fn measure(platform: &Platform, connections: usize) -> Result<Duration> {
    let indices: Vec<usize> = (0..connections).collect();
    for chunk in indices.chunks(CONNECT_CONCURRENCY) {
        try_join_all(
            chunk
                .iter()
                .map(|_| platform.connect(&["contacts:read"], PRINCIPAL, 1)),
        )
        .await?;
    }
    let mut client = platform.auth().await;
    let started = Instant::now();
    let answer = client
        .offboard_user(with_bearer(
            auth::OffboardUserRequest {
                principal: PRINCIPAL.into(),
                reason: "left the firm (benchmark)".into(),
                tenant: TENANT.into(),
                departed_at: None,
            },
            &token_of("operator"),
        ))
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    if !answer.failures.is_empty() {
        bail!(
            "{} of {connections} revocations failed, first: {:?}",
            answer.failures.len(),
            answer.failures[0]
        );
    }
    if answer.results.len() != connections {
        bail!(
            "OffboardUser revoked {} connections of {connections}",
            answer.results.len()
        );
    }
    Ok(elapsed)
}
