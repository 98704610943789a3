//! Faults injected through the admin API.

use std::time::{Duration, Instant};

use clio_sim::{Fault, Region};
use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn status_faults_hit_the_next_n_calls_then_wear_off() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let admin = sim.admin();
    admin
        .inject(
            Region::Us,
            Fault::Status {
                status: 503,
                count: Some(2),
                fraction: None,
                path_prefix: None,
            },
        )
        .await
        .unwrap();
    admin
        .inject(
            Region::Us,
            Fault::Status {
                status: 502,
                count: Some(1),
                fraction: None,
                path_prefix: None,
            },
        )
        .await
        .unwrap();
    let statuses = [
        get(&base, &t.access, "/api/v4/contacts").await.status,
        get(&base, &t.access, "/api/v4/contacts").await.status,
        get(&base, &t.access, "/api/v4/contacts").await.status,
        get(&base, &t.access, "/api/v4/contacts").await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [503, 503, 502, 200]);

    admin
        .inject(
            Region::Us,
            Fault::Status {
                status: 500,
                count: Some(1),
                fraction: None,
                path_prefix: Some("/oauth/token".into()),
            },
        )
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
        .inject(
            Region::Us,
            Fault::Status {
                status: 500,
                count: None,
                fraction: None,
                path_prefix: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(get(&base, &t.access, "/api/v4/contacts").await.status, 500);
    let eu = connect(&sim, Region::Eu, ALL).await;
    assert_eq!(
        get(&sim.base_url(Region::Eu), &eu.access, "/api/v4/contacts")
            .await
            .status,
        200,
        "faults are per region"
    );
    admin.clear_faults(Region::Us).await.unwrap();
    assert_eq!(get(&base, &t.access, "/api/v4/contacts").await.status, 200);
}

#[tokio::test]
async fn a_fraction_of_calls_fails() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    sim.admin()
        .inject(
            Region::Us,
            Fault::Status {
                status: 502,
                count: None,
                fraction: Some(0.5),
                path_prefix: None,
            },
        )
        .await
        .unwrap();
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
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    sim.admin()
        .inject(
            Region::Us,
            Fault::Latency {
                ms: 300,
                count: Some(1),
            },
        )
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        get(&base, &t.access, "/api/v4/contacts").await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    get(&base, &t.access, "/api/v4/contacts").await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "only the next call"
    );
}

#[tokio::test]
async fn dropped_connections_get_no_answer() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    sim.admin()
        .inject(Region::Us, Fault::Drop { count: 2 })
        .await
        .unwrap();
    for _ in 0..2 {
        let error = http()
            .get(format!("{base}/api/v4/contacts"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap_err();
        assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    }
    assert_eq!(
        get(&base, &t.access, "/api/v4/contacts").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_rate_limit_storm_answers_429_with_retry_after() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    sim.admin()
        .inject(Region::Us, Fault::RateLimitStorm { count: 3 })
        .await
        .unwrap();
    for _ in 0..3 {
        let answer = get(&base, &t.access, "/api/v4/contacts").await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.header("x-ratelimit-remaining"), Some("0"));
    }
    assert_eq!(
        get(&base, &t.access, "/api/v4/contacts").await.status,
        StatusCode::OK
    );
    assert_eq!(
        sim.admin().calls().await.unwrap().status_429_for(&t.access),
        3
    );
}

#[tokio::test]
async fn revoke_after_revokes_the_grant_mid_run() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    sim.admin()
        .inject(Region::Us, Fault::RevokeAfter { calls: 3 })
        .await
        .unwrap();
    let statuses = [
        get(&base, &t.access, "/api/v4/contacts")
            .await
            .status
            .as_u16(),
        get(&base, &t.access, "/api/v4/contacts")
            .await
            .status
            .as_u16(),
        get(&base, &t.access, "/api/v4/contacts")
            .await
            .status
            .as_u16(),
        get(&base, &t.access, "/api/v4/contacts")
            .await
            .status
            .as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 401, 401]);
    let form = refresh_form(&t.refresh);
    let (status, body) = token_request(&base, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}
