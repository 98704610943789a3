//! Serving speed and memory with a 1,000,000-record contacts data set.
//!
//! `cargo bench -p clio-sim --bench serve`. Several clients page through contacts with
//! typical fields over HTTP for a few seconds, rate limiting off. Printed: records/s over
//! HTTP, records/s of the same pages generated and serialised in-process without HTTP
//! (baseline), and the
//! process RSS before the simulator starts (the empty-process baseline) and after the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clio_sim::{AppSpec, ClioSim, DatasetSize, Decision, Region, Resource, SimConfig};
use serde_json::Value;

const FIELDS: &str = "id,etag,name,first_name,last_name,type,primary_email_address,updated_at";
const RECORDS: u64 = 1_000_000;
const CLIENTS: usize = 4;
const RUN: Duration = Duration::from_secs(5);
const REDIRECT: &str = "http://127.0.0.1:9/cb";

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

async fn access_token(sim: &ClioSim) -> String {
    let base = sim.base_url(Region::Us);
    let admin = sim.admin();
    let app = AppSpec {
        client_id: "bench".into(),
        client_secret: "bench-secret".into(),
        redirect_uris: vec![REDIRECT.into()],
        permissions: vec!["contacts:read".into()],
    };
    admin.register_app(Region::Us, &app).await.unwrap();
    let url = format!(
        "{base}/oauth/authorize?response_type=code&client_id=bench&redirect_uri={}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    );
    let code = admin
        .consent(&url, 1, Decision::Allow)
        .await
        .unwrap()
        .code
        .unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "bench"),
        ("client_secret", "bench-secret"),
    ];
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// One client following `next` links from the first page until `deadline`.
async fn client(base: String, token: String, deadline: Instant) -> u64 {
    let http = reqwest::Client::new();
    let first = format!("{base}/api/v4/contacts.json?fields={FIELDS}&limit=200");
    let mut url = first.clone();
    let mut records = 0u64;
    while Instant::now() < deadline {
        let body: Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let count = body["data"].as_array().map_or(0, Vec::len) as u64;
        assert!(count > 0, "{body}");
        records += count;
        url = body["meta"]["paging"]["next"]
            .as_str()
            .map_or_else(|| first.clone(), str::to_owned);
    }
    records
}

/// The same pages generated and serialised in-process, with no HTTP, for `run`.
fn baseline_without_http(sim: &ClioSim, run: Duration) -> f64 {
    let started = Instant::now();
    let mut query = format!("fields={FIELDS}&limit=200");
    let mut records = 0u64;
    while started.elapsed() < run {
        let bytes = sim
            .list_page_in_process(Region::Us, Resource::Contacts, &query)
            .unwrap();
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        records += page["data"].as_array().map_or(0, Vec::len) as u64;
        let next = page["meta"]["paging"]["next"]
            .as_str()
            .and_then(|next| next.split_once('?'))
            .map(|(_, q)| q.to_owned());
        query = next.unwrap_or_else(|| format!("fields={FIELDS}&limit=200"));
    }
    records as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let empty_rss = rss_kib();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sim = ClioSim::start(SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            dataset: DatasetSize {
                users: 50,
                ..DatasetSize::uniform(RECORDS)
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let started_rss = rss_kib();
        let token = access_token(&sim).await;
        let base = sim.base_url(Region::Us);

        let single = baseline_without_http(&sim, Duration::from_secs(2));

        let started = Instant::now();
        let deadline = started + RUN;
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(base.clone(), token.clone(), deadline)))
            .collect();
        let mut records = 0;
        for handle in handles {
            records += handle.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = records as f64 / elapsed;
        let after_rss = rss_kib();
        println!("clio-sim serve benchmark: {RECORDS} contacts, fields {FIELDS}, limit 200, rate limit off");
        println!("  http, {CLIENTS} clients (JSON parsed): {records} records in {elapsed:.1}s = {rate:.0} records/s (target >= 20000)");
        println!("  baseline, in-process generate+serialise+parse, 1 thread, no HTTP: {single:.0} records/s (http/baseline = {:.2})", rate / single);
        println!("  rss empty process: {} MiB", empty_rss / 1024);
        println!("  rss simulator started: {} MiB", started_rss / 1024);
        println!("  rss after run: {} MiB (target < 200), {:.1}x the empty process", after_rss / 1024, after_rss as f64 / empty_rss.max(1) as f64);
        sim.stop().await;
    });
}
