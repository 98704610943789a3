//! Connecting a person: the web and out-of-band flows against the simulator, and every way
//! a completion must be refused.

use std::time::Duration;

use clio_sim::Decision;
use proto::auth::v1 as pb;
use proto::common::v1::EventKind;
use tonic::Code;

use crate::support::{
    self, AppOptions, Setup, SimRegion, assert_refused, payload_of, scope, status_of, who_am_i,
};

#[tokio::test]
async fn web_flow_with_pkce_connects_through_the_callback_and_records_consent() {
    let stack = support::start(Setup::default()).await;
    let app = stack
        .app(AppOptions {
            pkce: true,
            ..AppOptions::default()
        })
        .await;
    let started = stack.start_web(&app.app_id, "alice@firm").await;
    // The person is sent to auth-svc's start page, which binds the flow to their browser
    // and redirects to Clio's authorize URL.
    assert!(
        started.authorization_url.starts_with(&stack.start_uri()),
        "{}",
        started.authorization_url
    );
    let clio_url = stack.open_start_link(&started.authorization_url).await;
    assert!(clio_url.starts_with(&stack.sim.base_url(SimRegion::Us)));
    let url = url::Url::parse(&clio_url).unwrap();
    let params: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(params["redirect_uri"], stack.callback_uri());
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(!params["code_challenge"].is_empty());
    assert_eq!(params["state"], started.state);

    let consent = stack.decide(&clio_url, 1, Decision::Allow).await;
    let location = consent.location.expect("Clio redirects to the callback");
    assert!(location.starts_with(&stack.callback_uri()), "{location}");
    // The browser follows the redirect to auth-svc's own callback.
    let page = stack.browser_get(&location).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("Connected"), "{body}");

    let listed = stack
        .list_connections(
            pb::ListConnectionsRequest {
                principal: "alice@firm".into(),
                ..Default::default()
            },
            "compliance",
        )
        .await;
    assert_eq!(listed.len(), 1);
    let connection = &listed[0];
    assert_eq!(status_of(connection.status), pb::ConnectionStatus::Active);
    let clio = connection.clio.as_ref().unwrap();
    assert!(!clio.user_id.is_empty() && !clio.account_name.is_empty());
    let mut granted = connection.granted_scopes.clone();
    granted.sort_by(|a, b| a.family.cmp(&b.family));
    assert_eq!(granted, vec![scope("contacts:read"), scope("matters:read")]);

    let consent_events = stack
        .events_about(EventKind::ConsentRecorded, &connection.connection_id)
        .await;
    assert_eq!(consent_events.len(), 1);
    let payload = payload_of(&consent_events[0]);
    assert_eq!(payload["mode"], "web");
    assert_eq!(payload["client_id"], app.client_id);
    assert_eq!(payload["risk_tier"], "low");
    assert_eq!(
        stack
            .events_about(EventKind::ConnectionGranted, &connection.connection_id)
            .await
            .len(),
        1
    );
    // The state was used: the same callback link a second time is refused.
    let replay = stack.browser_get(&location).await;
    assert_eq!(replay.status(), 400);
    stack.stop().await;
}

#[tokio::test]
async fn out_of_band_flow_connects_with_the_pasted_code() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    let started = stack.start_oob(&app.app_id, "bob@firm").await;
    // A bare code pastes as well as the page title.
    let code = stack.approved_code(&started.authorization_url, 2).await;
    let connection = stack.complete(&started.state, &code).await.unwrap();
    assert_eq!(connection.principal, "bob@firm");

    let lease = stack
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    assert_eq!(
        lease.api_base_url,
        format!("{}/api/v4", stack.sim.base_url(SimRegion::Us))
    );
    let me = who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap();
    assert_eq!(me.user_id, connection.clio.unwrap().user_id);
    stack.stop().await;
}

#[tokio::test]
async fn denied_consent_makes_no_connection() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;

    let started = stack.start_oob(&app.app_id, "carol@firm").await;
    let consent = stack
        .decide(&started.authorization_url, 3, Decision::Deny)
        .await;
    assert!(consent.code.is_none());
    let title = consent.page_title.expect("a failure page");
    let refused = stack.complete(&started.state, &title).await.unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "denied");

    let started = stack.start_web(&app.app_id, "carol@firm").await;
    let consent = stack
        .decide(&started.authorization_url, 3, Decision::Deny)
        .await;
    let location = consent
        .location
        .expect("redirect_on_decline sends the browser back");
    assert!(location.contains("error=access_denied"), "{location}");
    let page = stack.browser_get(&location).await.text().await.unwrap();
    assert!(page.contains("Access denied"), "{page}");

    let listed = stack
        .list_connections(pb::ListConnectionsRequest::default(), "operator")
        .await;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(stack.code_exchanges().await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn state_is_single_use_expires_and_cannot_be_forged() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;

    // Replayed: the second completion is refused before Clio is asked.
    let started = stack.start_oob(&app.app_id, "dan@firm").await;
    let code = stack.approved_code(&started.authorization_url, 1).await;
    stack.complete(&started.state, &code).await.unwrap();
    let replayed = stack.complete(&started.state, &code).await.unwrap_err();
    assert_refused(&replayed, Code::FailedPrecondition, "already used");

    // Forged: a state auth-svc never issued.
    let forged = stack
        .complete("bm90LWEtcmVhbC1zdGF0ZS1ub3QtYS1yZWFsLXN0YXRl", &code)
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::InvalidArgument);
    assert!(
        forged.message().starts_with("state"),
        "{}",
        forged.message()
    );
    let empty = stack.complete("", &code).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Expired: past its 10 minutes on auth-svc's clock.
    let started = stack.start_oob(&app.app_id, "dan@firm").await;
    let code = stack.approved_code(&started.authorization_url, 1).await;
    stack.advance(Duration::from_secs(601));
    let expired = stack.complete(&started.state, &code).await.unwrap_err();
    assert_refused(&expired, Code::FailedPrecondition, "expired");
    // Only the one good completion reached Clio's token endpoint.
    assert_eq!(stack.code_exchanges().await, 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_code_is_exchanged_once() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    let first = stack.start_oob(&app.app_id, "erin@firm").await;
    let second = stack.start_oob(&app.app_id, "erin@firm").await;
    let code = stack.approved_code(&first.authorization_url, 1).await;
    stack.complete(&first.state, &code).await.unwrap();
    let replayed = stack.complete(&second.state, &code).await.unwrap_err();
    assert_refused(&replayed, Code::FailedPrecondition, "invalid_grant");
    stack.stop().await;
}

#[tokio::test]
async fn a_redirect_uri_mismatch_is_refused() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    // A code issued for the web callback, pasted into an out-of-band authorization: the
    // exchange sends the approval URI, which differs from the one Clio issued the code for.
    let web = stack.start_web(&app.app_id, "fay@firm").await;
    let oob = stack.start_oob(&app.app_id, "fay@firm").await;
    let consent = stack
        .decide(&web.authorization_url, 1, Decision::Allow)
        .await;
    let location = url::Url::parse(&consent.location.unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let refused = stack.complete(&oob.state, &code).await.unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "invalid_grant");

    // An app whose Clio registration lacks auth-svc's callback: Clio refuses the authorize.
    let options = AppOptions {
        client_id: "callback-missing".into(),
        ..AppOptions::default()
    };
    stack
        .sim
        .admin()
        .register_app(
            SimRegion::Us,
            &clio_sim::AppSpec {
                client_id: options.client_id.clone(),
                client_secret: "secret-of-callback-missing".into(),
                redirect_uris: vec![stack.approval_uri(SimRegion::Us)],
                permissions: vec!["contacts:read".into(), "matters:read".into()],
            },
        )
        .await
        .unwrap();
    let app_id = stack
        .register_at_auth(
            &options,
            "secret-of-callback-missing",
            vec![stack.callback_uri(), stack.approval_uri(SimRegion::Us)],
        )
        .await;
    let web = stack.start_web(&app_id, "fay@firm").await;
    let consent = stack
        .decide(&web.authorization_url, 1, Decision::Allow)
        .await;
    assert!(
        consent.code.is_none(),
        "Clio must not issue a code for an unregistered redirect"
    );

    // auth-svc itself refuses a mode whose redirect URI the registration does not list.
    let narrow = AppOptions {
        client_id: "oob-only".into(),
        ..AppOptions::default()
    };
    let app_id = stack
        .register_at_auth(&narrow, "s", vec![stack.approval_uri(SimRegion::Us)])
        .await;
    let refused = stack
        .start_authorization(&app_id, "fay@firm", pb::AuthorizationMode::Web, None)
        .await
        .unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "redirect URI");
    stack.stop().await;
}

#[tokio::test]
async fn each_region_keeps_its_own_codes_and_tokens() {
    let stack = support::start(Setup::default()).await;
    let us = stack.app(AppOptions::default()).await;
    let eu = stack.eu_app().await;
    let eu_started = stack.start_oob(&eu.app_id, "gus@firm").await;
    assert!(
        eu_started
            .authorization_url
            .starts_with(&stack.sim.base_url(SimRegion::Eu)),
        "{}",
        eu_started.authorization_url
    );
    // A code from the US region pasted into the EU authorization goes to the EU host,
    // which never issued it.
    let us_started = stack.start_oob(&us.app_id, "gus@firm").await;
    let us_code = stack.approved_code(&us_started.authorization_url, 1).await;
    let refused = stack
        .complete(&eu_started.state, &us_code)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Each connection's lease points at its own region, and the token works only there.
    let eu_connection = stack.connect(&eu, "gus@firm", 1, None).await;
    assert_eq!(eu_connection.region, proto::common::v1::Region::Eu as i32);
    let lease = stack
        .lease(&eu_connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    assert_eq!(
        lease.api_base_url,
        format!("{}/api/v4", stack.sim.base_url(SimRegion::Eu))
    );
    who_am_i(&stack, SimRegion::Eu, &lease.access_token)
        .await
        .unwrap();
    let elsewhere = who_am_i(&stack, SimRegion::Us, &lease.access_token)
        .await
        .unwrap_err();
    assert_eq!(elsewhere.kind(), clio_api::ClioErrorKind::InvalidToken);
    stack.stop().await;
}

#[tokio::test]
async fn reconnect_replaces_tokens_and_grant_and_records_both() {
    let stack = support::start(Setup::default()).await;
    let (app, first) = stack.app_with_connection("hal@firm").await;
    let old_token = stack.lease_token(&first.connection_id).await;

    // The app narrows its scopes (new version, approved again) before the person reconnects.
    stack.narrow_to_contacts(&app.app_id).await;
    assert!(stack.connection(&first.connection_id).await.drifted);

    let again = stack
        .connect(&app, "hal@firm", 1, Some(&first.connection_id))
        .await;
    assert_eq!(again.connection_id, first.connection_id);
    assert_eq!(again.granted_scopes, vec![scope("contacts:read")]);
    assert!(!again.drifted);
    let new_token = stack.lease_token(&again.connection_id).await;
    assert_ne!(new_token, old_token);

    let reconnected = stack
        .events_about(EventKind::ConnectionReconnected, &first.connection_id)
        .await;
    assert_eq!(reconnected.len(), 1);
    let payload = payload_of(&reconnected[0]);
    assert_eq!(payload["previous_grant"]["scopes_version"], 1);
    assert_eq!(payload["new_grant"]["scopes_version"], 2);
    let mut previous: Vec<String> =
        serde_json::from_value(payload["previous_grant"]["scopes"].clone()).unwrap();
    previous.sort();
    assert_eq!(previous, ["contacts:read", "matters:read"]);
    assert_eq!(
        payload["new_grant"]["scopes"],
        serde_json::json!(["contacts:read"])
    );

    // A connection of someone else cannot be reconnected by this person.
    let refused = stack
        .start_authorization(
            &app.app_id,
            "mallory@firm",
            pb::AuthorizationMode::OutOfBand,
            Some(&first.connection_id),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    stack.stop().await;
}

#[tokio::test]
async fn consent_records_the_declared_scopes_their_version_and_when() {
    let stack = support::start(Setup::default()).await;
    let (_, connection) = stack.app_with_connection("ike@firm").await;
    let consent = stack
        .events_about(EventKind::ConsentRecorded, &connection.connection_id)
        .await;
    assert_eq!(consent.len(), 1);
    let payload = payload_of(&consent[0]);
    assert_eq!(payload["scopes_version"], 1);
    let declared = payload["declared_scopes"].as_array().expect("a list");
    let mut scopes: Vec<String> = declared
        .iter()
        .map(|d| d["scope"].as_str().expect("the scope as text").to_owned())
        .collect();
    scopes.sort();
    assert_eq!(scopes, ["contacts:read", "matters:read"]);
    assert!(
        declared
            .iter()
            .all(|d| d["justification"].as_str().is_some_and(|j| !j.is_empty())),
        "{declared:?}"
    );
    let consented_at = payload["consented_at"].as_str().expect("consented_at");
    let consented_at = chrono::DateTime::parse_from_rfc3339(consented_at).unwrap();
    let occurred = consent[0].occurred_at.unwrap();
    assert_eq!(consented_at.timestamp(), occurred.seconds);
    stack.stop().await;
}

#[tokio::test]
async fn a_completion_after_the_declared_scopes_changed_is_refused() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    let started = stack.start_oob(&app.app_id, "jo@firm").await;
    let code = stack.approved_code(&started.authorization_url, 1).await;

    // The app's scopes change, and compliance approves the new set, while the person is at
    // Clio: what they were shown is no longer what the app declares.
    stack.narrow_to_contacts(&app.app_id).await;

    let refused = stack.complete(&started.state, &code).await.unwrap_err();
    assert_refused(
        &refused,
        Code::FailedPrecondition,
        "declared scopes changed",
    );
    let listed = stack
        .list_connections(pb::ListConnectionsRequest::default(), "operator")
        .await;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(stack.code_exchanges().await, 0, "refused before Clio");
    stack.stop().await;
}

#[tokio::test]
async fn a_web_flow_completes_only_in_the_browser_that_opened_its_start_link() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    // An insider starts a web flow as themselves, opens its start link, and hands Clio's
    // link on: the colleague who approves it comes back to the callback without the cookie.
    let started = stack.start_web(&app.app_id, "mallory@firm").await;
    let clio_url = stack.open_start_link(&started.authorization_url).await;
    let consent = stack.decide(&clio_url, 1, Decision::Allow).await;
    let location = consent.location.expect("Clio redirects to the callback");

    let refused = stack.other_browser_get(&location).await;
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.unwrap();
    assert!(body.contains("did not open"), "{body}");
    assert_eq!(stack.code_exchanges().await, 0, "refused before Clio");
    let denied = stack.outbox().await.into_iter().any(|(kind, e)| {
        kind == EventKind::AccessDenied
            && e.reason
                .contains("did not open the authorization's start link")
    });
    assert!(denied, "the refused callback is audited");

    // A start link opens once: a second browser cannot take it over.
    let second = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&started.authorization_url)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 400);

    // The browser that opened it still completes the flow (the refusal did not use it up).
    let page = stack.browser_get(&location).await;
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
}
