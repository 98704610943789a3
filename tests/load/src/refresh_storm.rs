//! Every access token expiring at once (issue 16: "10,000 connections expiring at once",
//! target: all refreshed, one Clio refresh call each, 0 failed leases).
//!
//! `--connections` connections are made through the real out-of-band flow (one app, a
//! Clio user and a principal each, many at a time). Then the simulator's clock and
//! auth-svc's clock jump past the tokens' lifetime together, so every token is dead on
//! both sides, and `--callers` concurrent callers lease every connection, two leases per
//! connection back to back (two import jobs of one connection asking at once), so each
//! refresh also meets a concurrent lease of the same connection. The simulator counts
//! refresh calls per grant, i.e. per connection.
//!
//! The reference is the same leases by the same callers just before the jump, while every
//! token is fresh: the ratio is what refreshing costs a lease under the storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clio_sim::{DatasetSize, Region, SimConfig};
use harness::ClioUser;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;

use crate::platform::{Platform, ShiftedClock, lease_request};
use crate::procstat;
use crate::row::{Row, Target};

#[derive(Debug, Clone, Copy)]
pub struct StormOptions {
    pub connections: usize,
    /// Concurrent `LeaseAccessToken` callers.
    pub callers: usize,
}

/// Leases of each connection in a pass, queued back to back.
const LEASES_PER_CONNECTION: usize = 2;
/// Connections set up at once: auth-svc's pool (10 by default) is busy well before.
const CONNECT_CONCURRENCY: usize = 16;
const SCOPES: &[&str] = &["contacts:read"];

/// One pass of leases over every connection.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    pub wall: Duration,
    pub cpu: PassCpu,
    /// The token each lease got, in queue order (`None`: the lease failed).
    pub tokens: Vec<Option<String>>,
    pub failures: u64,
    pub first_failure: Option<String>,
    /// Every successful lease's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Pass {
    pub fn leases(&self) -> usize {
        self.tokens.len()
    }

    pub fn rate(&self) -> f64 {
        self.leases() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return 0.0;
        };
        let index = ((last as f64) * q).round() as usize;
        self.latencies[index.min(last)].as_secs_f64() * 1_000.0
    }
}

/// CPU time used during a pass, by process.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassCpu {
    /// This tool's process: auth-svc, audit-svc, the simulator and the callers.
    pub tool: Option<Duration>,
    /// The Postgres backends of auth-svc's database.
    pub auth_postgres: Option<Duration>,
    /// The Postgres backends of audit-svc's database (the refreshes' audit events).
    pub audit_postgres: Option<Duration>,
}

impl PassCpu {
    fn describe(&self) -> String {
        let secs = |d: Option<Duration>| {
            d.map_or_else(|| "n/a".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        format!(
            "CPU of the tool (auth-svc, audit-svc, simulator, callers) {}, auth-svc's Postgres \
             backends {}, audit-svc's {}",
            secs(self.tool),
            secs(self.auth_postgres),
            secs(self.audit_postgres)
        )
    }
}

/// Samples taken before a pass.
struct CpuProbe<'a> {
    databases: (&'a str, &'a str),
    tool: Option<Duration>,
    auth: Option<Duration>,
    audit: Option<Duration>,
}

impl<'a> CpuProbe<'a> {
    fn start(platform: &'a Platform) -> CpuProbe<'a> {
        let databases = platform.database_names();
        CpuProbe {
            databases,
            tool: procstat::sample(None).map(|s| s.cpu),
            auth: procstat::postgres_backends_cpu(databases.0),
            audit: procstat::postgres_backends_cpu(databases.1),
        }
    }

    fn finish(&self) -> PassCpu {
        let delta = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        PassCpu {
            tool: delta(self.tool, procstat::sample(None).map(|s| s.cpu)),
            auth_postgres: delta(self.auth, procstat::postgres_backends_cpu(self.databases.0)),
            audit_postgres: delta(
                self.audit,
                procstat::postgres_backends_cpu(self.databases.1),
            ),
        }
    }
}

pub struct StormReport {
    pub options: StormOptions,
    /// Setting up every connection through the out-of-band flow.
    pub seeding: Duration,
    /// The leases while every token was fresh.
    pub fresh: Pass,
    /// The leases right after every token expired.
    pub storm: Pass,
    /// Connections whose leases all got one new token.
    pub refreshed: usize,
    /// Connections whose two leases got different tokens.
    pub split_tokens: usize,
    /// Successful refresh calls at the simulator during the storm.
    pub refresh_calls: u64,
    /// Grants (connections) refreshed at least once, and the most calls of one.
    pub grants_refreshed: usize,
    pub most_calls_of_one: u64,
    /// Refresh requests the simulator refused during the storm.
    pub token_errors: u64,
    /// The one-minute load average when the storm began.
    pub load_average: Option<f64>,
    pub rows: Vec<Row>,
}

fn sim_config(options: &StormOptions) -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        dataset: DatasetSize {
            // A Clio user per connection.
            users: (options.connections as u64).max(5),
            ..DatasetSize::default()
        },
        ..SimConfig::default()
    }
}

pub async fn run(options: &StormOptions) -> Result<StormReport> {
    let options = StormOptions {
        connections: options.connections.max(1),
        callers: options.callers.max(1),
    };
    let sim = sim_config(&options);
    let lifetime = sim.access_token_ttl;
    let clock = ShiftedClock::default();
    let platform = Platform::start_with_clock(sim, clock.shared()).await?;
    let measured = measure(&platform, &options, &clock, lifetime).await;
    platform.stop().await?;
    let mut report = measured?;
    report.rows = rows(&report);
    Ok(report)
}

async fn measure(
    platform: &Platform,
    options: &StormOptions,
    clock: &ShiftedClock,
    lifetime: Duration,
) -> Result<StormReport> {
    let started = Instant::now();
    let app = platform.approved_app(SCOPES).await;
    let people: Vec<(String, ClioUser)> = (0..options.connections)
        .map(|i| {
            let user = i64::try_from(i + 1).unwrap_or(i64::MAX);
            (
                format!("storm-{user}@firm.example"),
                ClioUser::first_account(user),
            )
        })
        .collect();
    let connections = platform
        .connect_many(&app, &people, CONNECT_CONCURRENCY)
        .await?;
    let seeding = started.elapsed();
    let queue: Arc<Vec<String>> = Arc::new(
        connections
            .iter()
            .flat_map(|c| std::iter::repeat_n(c.clone(), LEASES_PER_CONNECTION))
            .collect(),
    );
    let mut pool = Vec::new();
    // A handful of HTTP/2 connections, as a few replicas of a caller would hold.
    for _ in 0..options.callers.div_ceil(25) {
        pool.push(harness::channel(platform.auth_address()).await);
    }

    let probe = CpuProbe::start(platform);
    let mut fresh = lease_pass(&pool, &queue, options.callers).await;
    fresh.cpu = probe.finish();
    check_failures("with fresh tokens", &fresh)?;
    let admin = platform.sim.admin();
    let before = admin.calls().await?;
    // Past the tokens' lifetime on both clocks: every token is dead for Clio and auth-svc.
    let jump = lifetime + Duration::from_secs(3_600);
    admin.advance_clock(jump).await?;
    clock.advance(jump);

    let load_average = procstat::load_average();
    let probe = CpuProbe::start(platform);
    let mut storm = lease_pass(&pool, &queue, options.callers).await;
    storm.cpu = probe.finish();
    let after = admin.calls().await?;
    check_failures("in the storm", &storm)?;

    let mut refreshed = 0;
    let mut split_tokens = 0;
    for (fresh_leases, storm_leases) in fresh
        .tokens
        .chunks(LEASES_PER_CONNECTION)
        .zip(storm.tokens.chunks(LEASES_PER_CONNECTION))
    {
        let old = fresh_leases.first().cloned().flatten();
        let new = storm_leases.first().cloned().flatten();
        if storm_leases.iter().any(|t| *t != new) {
            split_tokens += 1;
        } else if new.is_some() && new != old {
            refreshed += 1;
        }
    }
    let mut refresh_calls = 0;
    let mut grants_refreshed = 0;
    let mut most_calls_of_one = 0;
    for (grant, count) in &after.refreshes_by_grant {
        let calls =
            count.saturating_sub(before.refreshes_by_grant.get(grant).copied().unwrap_or(0));
        refresh_calls += calls;
        grants_refreshed += usize::from(calls > 0);
        most_calls_of_one = most_calls_of_one.max(calls);
    }
    Ok(StormReport {
        options: *options,
        seeding,
        fresh,
        storm,
        refreshed,
        split_tokens,
        refresh_calls,
        grants_refreshed,
        most_calls_of_one,
        token_errors: after.token.errors.saturating_sub(before.token.errors),
        load_average,
        rows: Vec::new(),
    })
}

fn check_failures(when: &str, pass: &Pass) -> Result<()> {
    if pass.failures > 0 {
        bail!(
            "{} of {} leases failed {when}, first: {}",
            pass.failures,
            pass.leases(),
            pass.first_failure.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// `callers` tasks taking the next lease of `queue` until it is empty.
async fn lease_pass(pool: &[Channel], queue: &Arc<Vec<String>>, callers: usize) -> Pass {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let client = AuthServiceClient::new(pool[i % pool.len()].clone());
            tokio::spawn(caller(client, queue.clone(), next.clone()))
        })
        .collect();
    let mut pass = Pass {
        tokens: vec![None; queue.len()],
        ..Pass::default()
    };
    for task in tasks {
        match task.await {
            Ok(outcomes) => {
                for (slot, outcome, latency) in outcomes {
                    match outcome {
                        Ok(token) => {
                            pass.tokens[slot] = Some(token);
                            pass.latencies.push(latency);
                        }
                        Err(error) => {
                            pass.failures += 1;
                            pass.first_failure.get_or_insert(error);
                        }
                    }
                }
            }
            // A caller that panicked: its leases count as failed (their slots stay
            // empty), and so does it.
            Err(error) => {
                pass.failures += 1;
                pass.first_failure.get_or_insert(error.to_string());
            }
        }
    }
    pass.wall = started.elapsed();
    pass.latencies.sort_unstable();
    let unanswered = pass.tokens.iter().filter(|t| t.is_none()).count() as u64;
    pass.failures = pass.failures.max(unanswered);
    pass
}

type Outcome = (usize, Result<String, String>, Duration);

async fn caller(
    mut client: AuthServiceClient<Channel>,
    queue: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    loop {
        let slot = next.fetch_add(1, Ordering::Relaxed);
        let Some(connection) = queue.get(slot) else {
            return outcomes;
        };
        let sent = Instant::now();
        let outcome = match lease_request(connection, SCOPES) {
            Ok(request) => client
                .lease_access_token(request)
                .await
                .map(|answer| answer.into_inner().access_token)
                .map_err(|status| status.to_string()),
            Err(error) => Err(format!("{error:#}")),
        };
        outcomes.push((slot, outcome, sent.elapsed()));
    }
}

fn rows(report: &StormReport) -> Vec<Row> {
    let n = report.options.connections;
    let callers = report.options.callers;
    let command = format!(
        "cargo run --release -p load -- refresh-storm --connections {n} --callers {callers}"
    );
    let storm = &report.storm;
    vec![
        Row::new(
            format!("refresh storm, {n} connections expired at once: refreshed"),
            report.refreshed as f64,
            "connections",
        )
        .target(Target::FigureAtLeast { min: n as f64 })
        .command(command.clone())
        .note(format!(
            "{} leases ({LEASES_PER_CONNECTION} per connection, back to back) by {callers} \
             callers in {:.2} s, 0 failed; {} connections got two different tokens; set-up \
             of {n} connections through the out-of-band flow {:.1} s",
            storm.leases(),
            storm.wall.as_secs_f64(),
            report.split_tokens,
            report.seeding.as_secs_f64(),
        )),
        Row::new(
            format!("refresh storm, {n} connections: Clio refresh calls of one connection, most"),
            report.most_calls_of_one as f64,
            "calls",
        )
        .target(Target::FigureAtMost { max: 1.0 })
        .command(command.clone())
        .note(format!(
            "{} refresh calls at the simulator for {} connections refreshed; {} refused",
            report.refresh_calls, report.grants_refreshed, report.token_errors
        )),
        Row::new(
            format!("refresh storm, {n} connections: leases while every token is expired"),
            storm.rate(),
            "leases/s",
        )
        .against(
            "the same leases, tokens fresh",
            report.fresh.rate(),
            "leases/s",
        )
        .command(command)
        .note(format!(
            "storm {:.2} s (p50 {:.1} ms, p99 {:.1} ms; {}) against {:.2} s fresh (p50 \
             {:.1} ms, p99 {:.1} ms; {}); auth-svc with its default pool, the simulator, \
             audit-svc and the callers share the machine (load average {})",
            storm.wall.as_secs_f64(),
            storm.quantile_ms(0.5),
            storm.quantile_ms(0.99),
            storm.cpu.describe(),
            report.fresh.wall.as_secs_f64(),
            report.fresh.quantile_ms(0.5),
            report.fresh.quantile_ms(0.99),
            report.fresh.cpu.describe(),
            report
                .load_average
                .map_or_else(|| "n/a".to_owned(), |l| format!("{l:.1}")),
        )),
    ]
}
