//! The per-token and per-app rate limits and the call counters.

use std::time::Duration;

use clio_sim::{AppSpec, RateLimit, Region, SimConfig, token_id};
use reqwest::StatusCode;

use crate::support::*;

fn limited(limit: u32) -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        rate_limit: Some(RateLimit {
            limit,
            window: Duration::from_secs(60),
        }),
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn every_answer_carries_the_limit_and_past_it_comes_429_with_retry_after() {
    let sim = start_with(limited(3)).await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let now = chrono::Utc::now().timestamp();
    for (path, remaining) in [
        ("/api/v4/contacts", "2"),
        ("/api/v4/matters/1", "1"),
        ("/api/v4/users/who_am_i", "0"),
    ] {
        let answer = get(&base, &t.access, path).await;
        assert_ne!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            answer.header("x-ratelimit-remaining"),
            Some(remaining),
            "{path}: even on a 404"
        );
        let reset: i64 = answer.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((now..=now + 61).contains(&reset), "{reset}");
    }
    let over = get(&base, &t.access, "/api/v4/contacts").await;
    assert_eq!(
        (over.status, error_type(&over.body)),
        (StatusCode::TOO_MANY_REQUESTS, "RateLimited")
    );
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));

    let other = connect(&sim, Region::Us, ALL).await;
    assert_eq!(
        get(&base, &other.access, "/api/v4/contacts").await.status,
        StatusCode::OK,
        "limits are per token"
    );

    let calls = sim.admin().calls().await.unwrap();
    assert_eq!(calls.api_calls_for(&t.access), 4);
    assert_eq!(calls.status_429_for(&t.access), 1);
    assert_eq!(calls.max_in_window_for(&t.access), 4);
    sim.admin().reset_rate_limits(Region::Us).await.unwrap();
    let again = get(&base, &t.access, "/api/v4/contacts").await;
    assert_eq!(
        (again.status, again.header("x-ratelimit-remaining")),
        (StatusCode::OK, Some("2"))
    );
}

#[tokio::test]
async fn without_a_limit_there_are_no_headers_and_no_429() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    for _ in 0..60 {
        let answer = get(&base, &t.access, "/api/v4/contacts?limit=1").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-ratelimit-limit"), None);
    }
    assert_eq!(
        sim.admin()
            .calls()
            .await
            .unwrap()
            .max_in_window_for(&t.access),
        60
    );
}

#[tokio::test]
async fn calls_are_counted_per_token_and_endpoint_under_a_hash() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let admin = sim.admin();
    let t = connect(&sim, Region::Us, ALL).await;
    get(&base, &t.access, "/api/v4/contacts.json").await;
    get(&base, &t.access, "/api/v4/contacts?limit=2").await;
    let first =
        get(&base, &t.access, "/api/v4/contacts?limit=1").await.body["data"][0]["id"].clone();
    get(&base, &t.access, &format!("/api/v4/contacts/{first}.json")).await;
    get(&base, &t.access, "/api/v4/users/who_am_i.json").await;
    let (_, refresh) = token_request(&base, &refresh_form(&t.refresh)).await;
    assert!(refresh["access_token"].is_string());
    token_request(&base, &refresh_form("nope")).await;

    let calls = admin.calls().await.unwrap();
    assert_eq!(calls.api_calls_on(&t.access, "/api/v4/contacts"), 3);
    assert_eq!(calls.api_calls_on(&t.access, "/api/v4/contacts/{id}"), 1);
    assert_eq!(calls.api_calls_on(&t.access, "/api/v4/users/who_am_i"), 1);
    assert_eq!(calls.api_calls_for(&t.access), 5);
    assert_eq!(
        (
            calls.token.authorization_code,
            calls.token.refresh_token,
            calls.token.errors
        ),
        (1, 1, 1)
    );
    let json = serde_json::to_string(&calls).unwrap();
    assert!(!json.contains(&t.access), "tokens are never exposed");
    assert!(
        calls.api.iter().all(|c| c.token_id == token_id(&t.access)
            && c.region == Region::Us
            && c.method == "GET")
    );
    admin.reset_calls().await.unwrap();
    let calls = admin.calls().await.unwrap();
    assert_eq!(
        (calls.total_api_calls(), calls.token.authorization_code),
        (0, 0)
    );
}

#[tokio::test]
async fn the_app_limit_counts_every_token_of_one_app_and_spares_other_apps() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        app_rate_limit: Some(RateLimit {
            limit: 4,
            window: Duration::from_secs(60),
        }),
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let admin = sim.admin();
    let ours = app(ALL);
    let (first, second) = (
        connect_as(&sim, Region::Us, &ours, 1).await,
        connect_as(&sim, Region::Us, &ours, 2).await,
    );
    let other_app = AppSpec {
        client_id: "other".into(),
        ..app(ALL)
    };
    let other = connect_as(&sim, Region::Us, &other_app, 1).await;
    let page = "/api/v4/contacts?limit=1";
    for token in [&first, &second, &first, &second] {
        let answer = get(&base, &token.access, page).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.header("x-ratelimit-limit"),
            None,
            "no per-token limit"
        );
    }
    let over = get(&base, &first.access, page).await;
    assert_eq!(
        (over.status, error_type(&over.body)),
        (StatusCode::TOO_MANY_REQUESTS, "RateLimited")
    );
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let message = over.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("application"), "{message}");
    for _ in 0..4 {
        let theirs = get(&base, &other.access, page).await;
        assert_eq!(
            theirs.status,
            StatusCode::OK,
            "another app has its own window"
        );
    }

    let calls = admin.calls().await.unwrap();
    assert_eq!(calls.app_limit_429_for(Region::Us, CLIENT_ID), 1);
    assert_eq!(calls.app_max_in_window_for(Region::Us, CLIENT_ID), 5);
    assert_eq!(calls.status_429_for(&first.access), 1);
    assert_eq!(calls.app_limit_429_for(Region::Us, "other"), 0);
    assert_eq!(calls.app_max_in_window_for(Region::Us, "other"), 4);
    assert_eq!(calls.max_in_window_for(&first.access), 3);

    admin.reset_rate_limits(Region::Us).await.unwrap();
    assert_eq!(
        get(&base, &second.access, page).await.status,
        StatusCode::OK
    );
    admin.reset_calls().await.unwrap();
    let calls = admin.calls().await.unwrap();
    assert_eq!(calls.app_limit_429_for(Region::Us, CLIENT_ID), 0);
    assert_eq!(calls.app_max_in_window_for(Region::Us, CLIENT_ID), 1);
}

#[tokio::test]
async fn a_token_over_its_own_limit_is_not_an_app_limit_429() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: Some(RateLimit {
            limit: 2,
            window: Duration::from_secs(60),
        }),
        app_rate_limit: Some(RateLimit {
            limit: 100,
            window: Duration::from_secs(60),
        }),
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let statuses: Vec<u16> = futures_statuses(&base, &t.access, 3).await;
    assert_eq!(statuses, [200, 200, 429]);
    let calls = sim.admin().calls().await.unwrap();
    assert_eq!(calls.status_429_for(&t.access), 1);
    assert_eq!(calls.app_limit_429_for(Region::Us, CLIENT_ID), 0);
    assert_eq!(calls.app_max_in_window_for(Region::Us, CLIENT_ID), 3);
}

/// The statuses of `n` listings in a row.
async fn futures_statuses(base: &str, token: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(
            get(base, token, "/api/v4/contacts?limit=1")
                .await
                .status
                .as_u16(),
        );
    }
    statuses
}
