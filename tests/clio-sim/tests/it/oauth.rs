//! Authorize, consent, the approval page, the token endpoint, deauthorize and regions.

use std::time::Duration;

use clio_sim::{Decision, Region, SimConfig};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

fn flat_error(body: &Value, error: &str) {
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "flat body: {body}");
}

/// Asks the token endpoint with `form` and asserts it refuses with `status` and a flat
/// `error` body; returns the body.
async fn token_refused(
    base: &str,
    form: &[(&str, &str)],
    status: StatusCode,
    error: &str,
) -> Value {
    let (answered, body) = token_request(base, form).await;
    assert_eq!(answered, status, "{body}");
    flat_error(&body, error);
    body
}

/// A US-only simulator issuing 1-hour access tokens.
async fn us_hour_tokens() -> clio_sim::ClioSim {
    start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        access_token_ttl: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await
}

/// Registers the test app at `sim`'s US region with `permissions`; returns the simulator
/// and its US base URL.
async fn with_us_app(sim: clio_sim::ClioSim, permissions: &[&str]) -> (clio_sim::ClioSim, String) {
    sim.admin()
        .register_app(Region::Us, &app(permissions))
        .await
        .unwrap();
    let base = sim.base_url(Region::Us);
    (sim, base)
}

/// The HTML of the page at `url`, as a browser following a redirect would see it.
async fn page_at(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn authorize_page_lists_permissions_and_refuses_bad_requests() {
    let (sim, base) = with_us_app(start().await, &["contacts:read", "calendar:read"]).await;
    let page = http()
        .get(authorize_url(&base, CLIENT_ID, REDIRECT, "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("contacts:read") && html.contains("calendar:read"),
        "{html}"
    );

    let unknown = http()
        .get(authorize_url(&base, "nope", REDIRECT, "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let unregistered = authorize_url(&base, CLIENT_ID, "http://127.0.0.1:9/other", "s");
    let page = http().get(&unregistered).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let consent = sim
        .admin()
        .consent(&unregistered, 1, Decision::Allow)
        .await
        .unwrap();
    assert_eq!(
        (consent.status, consent.location, consent.code),
        (400, None, None)
    );
    assert!(consent.page_title.unwrap().contains("not registered"));
    let admin = sim.admin();
    let eu_url = authorize_url(&sim.base_url(Region::Eu), CLIENT_ID, REDIRECT, "s");
    let other_region = admin.consent(&eu_url, 1, Decision::Allow).await.unwrap();
    assert_eq!(other_region.status, 400, "apps are per region");
    let url = authorize_url(&base, CLIENT_ID, REDIRECT, "s");
    let no_user = admin.consent(&url, 999_999, Decision::Allow).await.unwrap();
    assert_eq!(no_user.status, 400);
}

#[tokio::test]
async fn approval_redirects_with_code_and_state_keeping_extra_query_parameters() {
    let (sim, base) = with_us_app(start().await, &["contacts:read"]).await;
    let redirect = format!("{REDIRECT}?tenant=acme");
    let consent = sim
        .admin()
        .consent(
            &authorize_url(&base, CLIENT_ID, &redirect, "xyz"),
            1,
            Decision::Allow,
        )
        .await
        .unwrap();
    assert_eq!(consent.status, 302);
    let location = consent.location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = query_of(&location);
    let code = consent.code.unwrap();
    assert!(query.contains(&("tenant".into(), "acme".into())));
    assert!(query.contains(&("code".into(), code.clone())));
    assert!(query.contains(&("state".into(), "xyz".into())));
    assert_eq!(consent.page_title, None);

    // The browser's own button does the same through the form on the consent page.
    let form = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("state", "abc"),
        ("user_id", "2"),
        ("decision", "allow"),
    ];
    let answer = http()
        .post(format!("{base}/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    let location = answer.headers()["location"].to_str().unwrap();
    assert!(
        query_of(location)
            .iter()
            .any(|(k, v)| k == "code" && !v.is_empty())
    );
    assert!(query_of(location).contains(&("state".into(), "abc".into())));
}

#[tokio::test]
async fn denial_redirects_only_with_redirect_on_decline() {
    let (sim, base) = with_us_app(start().await, &["contacts:read"]).await;
    let url = authorize_url(&base, CLIENT_ID, REDIRECT, "st");
    let stay = sim.admin().consent(&url, 1, Decision::Deny).await.unwrap();
    assert_eq!((stay.status, stay.location, stay.code), (200, None, None));
    assert_eq!(
        stay.page_title.as_deref(),
        Some("Failure error=access_denied")
    );

    let declined = sim
        .admin()
        .consent(
            &format!("{url}&redirect_on_decline=true"),
            1,
            Decision::Deny,
        )
        .await
        .unwrap();
    assert_eq!(declined.status, 302);
    let query = query_of(&declined.location.unwrap());
    assert_eq!(
        query,
        [
            ("error".into(), "access_denied".into()),
            ("state".into(), "st".into())
        ]
    );
}

#[tokio::test]
async fn out_of_band_approval_page_title_carries_the_result() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let approval = format!("{base}/oauth/approval");
    let mut spec = app(&["contacts:read"]);
    spec.redirect_uris = vec![approval.clone()];
    sim.admin().register_app(Region::Us, &spec).await.unwrap();
    let url = authorize_url(&base, CLIENT_ID, &approval, "st");
    let consent = sim.admin().consent(&url, 1, Decision::Allow).await.unwrap();
    let code = consent.code.unwrap();
    assert_eq!(consent.page_title, Some(format!("Success code={code}")));
    let page = page_at(&consent.location.unwrap()).await;
    assert!(
        page.contains(&format!("<title>Success code={code}</title>")),
        "{page}"
    );

    let denied = sim.admin().consent(&url, 1, Decision::Deny).await.unwrap();
    assert_eq!(
        denied.page_title.as_deref(),
        Some("Failure error=access_denied")
    );
    let page = page_at(&denied.location.unwrap()).await;
    assert!(
        page.contains("<title>Failure error=access_denied</title>"),
        "{page}"
    );

    // The code from the page works at the token endpoint with the approval redirect URI.
    let (status, body) = token_request(&base, &exchange_form(&code, &approval, SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn fresh_code(sim: &clio_sim::ClioSim) -> String {
    let url = authorize_url(&sim.base_url(Region::Us), CLIENT_ID, REDIRECT, "st");
    sim.admin()
        .consent(&url, 1, Decision::Allow)
        .await
        .unwrap()
        .code
        .unwrap()
}

fn exchange_form<'a>(code: &'a str, redirect: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", CLIENT_ID),
        ("client_secret", secret),
    ]
}

#[tokio::test]
async fn a_code_is_single_use_needs_the_exact_redirect_and_expires() {
    let (sim, base) = with_us_app(us_hour_tokens().await, &["contacts:read"]).await;

    let code = fresh_code(&sim).await;
    let (status, body) = token_request(&base, &exchange_form(&code, REDIRECT, SECRET)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].is_string() && body["refresh_token"].is_string());
    token_refused(
        &base,
        &exchange_form(&code, REDIRECT, SECRET),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let code = fresh_code(&sim).await;
    token_refused(
        &base,
        &exchange_form(&code, &format!("{REDIRECT}/"), SECRET),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let code = fresh_code(&sim).await;
    sim.admin()
        .advance_clock(Duration::from_secs(601))
        .await
        .unwrap();
    let body = token_refused(
        &base,
        &exchange_form(&code, REDIRECT, SECRET),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn token_endpoint_errors_have_exact_flat_bodies() {
    let (sim, base) = with_us_app(start().await, &["contacts:read"]).await;
    let code = fresh_code(&sim).await;

    token_refused(
        &base,
        &[("code", code.as_str())],
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    token_refused(
        &base,
        &exchange_form(&code, REDIRECT, "wrong"),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let mut unknown = exchange_form(&code, REDIRECT, SECRET);
    unknown[3] = ("client_id", "nobody");
    token_refused(&base, &unknown, StatusCode::UNAUTHORIZED, "invalid_client").await;
    token_refused(
        &base,
        &[
            ("grant_type", "password"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    token_refused(
        &base,
        &exchange_form("made-up", REDIRECT, SECRET),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The failed attempts did not burn the code.
    let (status, _) = token_request(&base, &exchange_form(&code, REDIRECT, SECRET)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_does_not_rotate_by_default_and_tokens_expire_on_the_clock() {
    let sim = us_hour_tokens().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, &["users:read"]).await;
    assert_eq!(
        get(&base, &tokens.access, "/api/v4/users/who_am_i")
            .await
            .status,
        StatusCode::OK
    );
    sim.admin()
        .advance_clock(Duration::from_secs(3601))
        .await
        .unwrap();
    let expired = get(&base, &tokens.access, "/api/v4/users/who_am_i").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    flat_error(&expired.body, "invalid_token");

    for _ in 0..2 {
        let (status, body) = token_request(&base, &refresh_form(&tokens.refresh)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expires_in"], 3600);
        assert!(
            body.get("refresh_token").is_none(),
            "no rotation by default: {body}"
        );
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(
            get(&base, access, "/api/v4/users/who_am_i").await.status,
            StatusCode::OK
        );
    }
    let mut wrong = refresh_form(&tokens.refresh);
    wrong[3] = ("client_secret", "nope");
    token_refused(&base, &wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn refresh_rotates_when_configured() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        rotate_refresh_tokens: true,
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, &["users:read"]).await;
    let (status, body) = token_request(&base, &refresh_form(&tokens.refresh)).await;
    assert_eq!(status, StatusCode::OK);
    let rotated = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, tokens.refresh);
    token_refused(
        &base,
        &refresh_form(&tokens.refresh),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let (status, _) = token_request(&base, &refresh_form(&rotated)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deauthorize_rejects_every_token_of_the_grant() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, &["users:read"]).await;
    let (_, body) = token_request(&base, &refresh_form(&tokens.refresh)).await;
    let second_access = body["access_token"].as_str().unwrap().to_owned();

    let anonymous = http()
        .post(format!("{base}/oauth/deauthorize"))
        .form(&[("token", tokens.access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let revoke = http()
        .post(format!("{base}/oauth/deauthorize"))
        .bearer_auth(&tokens.access)
        .form(&[("token", tokens.access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
    assert!(revoke.text().await.unwrap().is_empty());
    for access in [&tokens.access, &second_access] {
        let answer = get(&base, access, "/api/v4/users/who_am_i").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        flat_error(&answer.body, "invalid_token");
    }
    token_refused(
        &base,
        &refresh_form(&tokens.refresh),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(sim.admin().calls().await.unwrap().deauthorize, 2);
}

#[tokio::test]
async fn admin_revokes_a_users_grants_mid_run() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let spec = app(&["users:read"]);
    let first = connect_as(&sim, Region::Us, &spec, 1).await;
    let second = connect_as(&sim, Region::Us, &spec, 1).await;
    let other_user = connect_as(&sim, Region::Us, &spec, 2).await;
    assert_eq!(
        sim.admin()
            .revoke_grants_of(Region::Us, CLIENT_ID, 1)
            .await
            .unwrap(),
        2
    );
    for (tokens, status) in [(&first, 401), (&second, 401), (&other_user, 200)] {
        assert_eq!(
            get(&base, &tokens.access, "/api/v4/users/who_am_i")
                .await
                .status,
            status
        );
    }
    assert_eq!(
        sim.admin()
            .revoke_token(Region::Us, &other_user.access)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        get(&base, &other_user.access, "/api/v4/users/who_am_i")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn tokens_of_one_region_are_invalid_in_another() {
    let sim = start().await;
    let us = connect(&sim, Region::Us, &["users:read"]).await;
    let eu_base = sim.base_url(Region::Eu);
    let answer = get(&eu_base, &us.access, "/api/v4/users/who_am_i").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    flat_error(&answer.body, "invalid_token");
    let (status, body) = token_request(&eu_base, &refresh_form(&us.refresh)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the app is not registered in eu: {body}"
    );
    sim.admin()
        .register_app(Region::Eu, &app(&["users:read"]))
        .await
        .unwrap();
    let (status, body) = token_request(&eu_base, &refresh_form(&us.refresh)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    flat_error(&body, "invalid_grant");
}
