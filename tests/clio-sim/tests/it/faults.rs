//! Faults injected through the admin API.

use std::time::{Duration, Instant};

use clio_sim::{ClioSim, Fault, Region};
use reqwest::StatusCode;

use crate::support::*;

/// A US simulator with one connection of every permission, and `fault` injected.
async fn us_with_fault(fault: Fault) -> (ClioSim, String, Tokens) {
    let (sim, base, tokens) = us_connected().await;
    sim.admin().inject(Region::Us, fault).await.unwrap();
    (sim, base, tokens)
}

/// A `status` answer for the next `count` calls (all of them when `None`).
fn status_fault(status: u16, count: Option<u32>, path_prefix: Option<&str>) -> Fault {
    Fault::Status {
        status,
        count,
        fraction: None,
        path_prefix: path_prefix.map(Into::into),
    }
}

/// The status of one contacts listing.
async fn contacts_status(base: &str, token: &str) -> u16 {
    get(base, token, "/api/v4/contacts").await.status.as_u16()
}

#[tokio::test]
async fn status_faults_hit_the_next_n_calls_then_wear_off() {
    let (sim, base, t) = us_with_fault(status_fault(503, Some(2), None)).await;
    let admin = sim.admin();
    admin
        .inject(Region::Us, status_fault(502, Some(1), None))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(contacts_status(&base, &t.access).await);
    }
    assert_eq!(statuses, [503, 503, 502, 200]);

    admin
        .inject(Region::Us, status_fault(500, Some(1), Some("/oauth/token")))
        .await
        .unwrap();
    assert_eq!(
        get(&base, &t.access, "/api/v4/contacts").await.status,
        StatusCode::OK,
        "only the token endpoint"
    );
    let form = refresh_form(&t.refresh);
    assert_eq!(
        token_request(&base, &form).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(token_request(&base, &form).await.0, StatusCode::OK);

    admin
        .inject(Region::Us, status_fault(500, None, None))
        .await
        .unwrap();
    assert_eq!(contacts_status(&base, &t.access).await, 500);
    let eu = connect(&sim, Region::Eu, ALL).await;
    assert_eq!(
        get(&sim.base_url(Region::Eu), &eu.access, "/api/v4/contacts")
            .await
            .status,
        200,
        "faults are per region"
    );
    admin.clear_faults(Region::Us).await.unwrap();
    assert_eq!(contacts_status(&base, &t.access).await, 200);
}

#[tokio::test]
async fn a_fraction_of_calls_fails() {
    let (_sim, base, t) = us_with_fault(Fault::Status {
        status: 502,
        count: None,
        fraction: Some(0.5),
        path_prefix: None,
    })
    .await;
    let mut failed = 0;
    for _ in 0..60 {
        if get(&base, &t.access, "/api/v4/contacts?limit=1")
            .await
            .status
            == StatusCode::BAD_GATEWAY
        {
            failed += 1;
        }
    }
    assert!((10..=50).contains(&failed), "{failed} of 60");
}

#[tokio::test]
async fn latency_delays_answers() {
    // Long enough that an undelayed local call never takes as long, even on a busy machine.
    let delay = Duration::from_millis(800);
    let (_sim, base, t) = us_with_fault(Fault::Latency {
        ms: 800,
        count: Some(1),
    })
    .await;
    let started = Instant::now();
    assert_eq!(contacts_status(&base, &t.access).await, 200);
    assert!(started.elapsed() >= delay);
    let started = Instant::now();
    get(&base, &t.access, "/api/v4/contacts").await;
    assert!(started.elapsed() < delay, "only the next call is delayed");
}

#[tokio::test]
async fn dropped_connections_get_no_answer() {
    let (_sim, base, t) = us_with_fault(Fault::Drop { count: 2 }).await;
    for _ in 0..2 {
        let error = http()
            .get(format!("{base}/api/v4/contacts"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap_err();
        assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    }
    assert_eq!(contacts_status(&base, &t.access).await, 200);
}

#[tokio::test]
async fn a_rate_limit_storm_answers_429_with_retry_after() {
    let (sim, base, t) = us_with_fault(Fault::RateLimitStorm { count: 3 }).await;
    for _ in 0..3 {
        let answer = get(&base, &t.access, "/api/v4/contacts").await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.header("x-ratelimit-remaining"), Some("0"));
    }
    assert_eq!(contacts_status(&base, &t.access).await, 200);
    assert_eq!(
        sim.admin().calls().await.unwrap().status_429_for(&t.access),
        3
    );
}

#[tokio::test]
async fn a_storm_for_a_duration_tells_each_token_to_wait_out_its_remainder() {
    let (sim, base, t) = us_with_fault(Fault::RateLimitStormFor { ms: 59_500 }).await;
    let first = get(&base, &t.access, "/api/v4/contacts").await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.header("retry-after"), Some("60"), "rounded up");
    assert_eq!(first.header("x-ratelimit-remaining"), Some("0"));
    // Still inside the storm: told to wait what is left of it, never longer.
    let again = get(&base, &t.access, "/api/v4/matters").await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    let left: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&left), "{left}");
    // Another token's storm starts with its own first call.
    let other = connect_as(&sim, Region::Us, &app(ALL), 2).await;
    let theirs = get(&base, &other.access, "/api/v4/contacts").await;
    assert_eq!(theirs.header("retry-after"), Some("60"));
    let calls = sim.admin().calls().await.unwrap();
    assert_eq!(calls.status_429_for(&t.access), 2);
    assert_eq!(calls.status_429_for(&other.access), 1);

    sim.admin().clear_faults(Region::Us).await.unwrap();
    assert_eq!(contacts_status(&base, &t.access).await, 200);
}

#[tokio::test]
async fn revoke_after_revokes_the_grant_mid_run() {
    let (_sim, base, t) = us_with_fault(Fault::RevokeAfter { calls: 3 }).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(contacts_status(&base, &t.access).await);
    }
    assert_eq!(statuses, [200, 200, 401, 401]);
    let form = refresh_form(&t.refresh);
    let (status, body) = token_request(&base, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}
