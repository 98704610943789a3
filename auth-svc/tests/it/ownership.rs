//! Who a connection and a flow belong to: a Clio login is connected by one person at a
//! time (never a shared login), and an authorization is completed only by the caller that
//! started it.

use clio_sim::{DatasetSize, Decision, SimConfig};
use harness::poll_until;
use proto::auth::v1 as pb;
use proto::common::v1::{AuditEvent, EventKind};
use secrecy::SecretString;
use service_runtime::Role;
use service_runtime::config::CallerCredential;
use std::time::Duration;
use tonic::Code;

use crate::support::{self, AppOptions, Setup, SimRegion, Stack, assert_refused, who_am_i};

const SHARED_LOGIN: &str =
    "is already connected by another person; each person connects with their own Clio login";

/// A simulator with seven Clio users per region, so tests can name user 7.
fn seven_users() -> Setup {
    Setup {
        sim: SimConfig {
            dataset: DatasetSize {
                users: 7,
                ..DatasetSize::default()
            },
            ..support::sim_config()
        },
        ..Setup::default()
    }
}

/// ACCESS_DENIED events whose actor is `actor`.
async fn denials_of(stack: &Stack, actor: &str) -> Vec<AuditEvent> {
    stack
        .outbox()
        .await
        .into_iter()
        .filter(|(kind, e)| {
            *kind == EventKind::AccessDenied && e.actor.as_ref().is_some_and(|a| a.id == actor)
        })
        .map(|(_, e)| e)
        .collect()
}

async fn connections_of(stack: &Stack, principal: &str) -> Vec<pb::Connection> {
    stack
        .list_connections(
            pb::ListConnectionsRequest {
                principal: principal.into(),
                ..Default::default()
            },
            "operator",
        )
        .await
}

#[tokio::test]
async fn a_clio_login_is_connected_by_one_person_at_a_time() {
    let stack = support::start(seven_users()).await;
    let app = stack.app(AppOptions::default()).await;
    let other_app = stack
        .app(AppOptions {
            client_id: "billing-app".into(),
            ..AppOptions::default()
        })
        .await;
    let bob = stack.connect(&app, "bob@firm", 7, None).await;
    let clio_user = bob.clio.clone().unwrap().user_id;
    // The same person connecting the same Clio login through another app is fine.
    let bob_elsewhere = stack.connect(&other_app, "bob@firm", 7, None).await;

    // carol signs in to Clio as user 7, out of band through the same app: refused.
    let started = stack.start_oob(&app.app_id, "carol@firm").await;
    let code = stack.approved_code(&started.authorization_url, 7).await;
    let refused = stack.complete(&started.state, &code).await.unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, SHARED_LOGIN);
    assert!(
        refused.message().contains(&clio_user) && !refused.message().contains("bob"),
        "{}",
        refused.message()
    );

    // ... and through the web flow of another app: her browser is told why.
    let started = stack.start_web(&other_app.app_id, "carol@firm").await;
    let consent = stack
        .decide(&started.authorization_url, 7, Decision::Allow)
        .await;
    let page = stack.browser_get(&consent.location.unwrap()).await;
    assert_eq!(page.status(), 400);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("Connection failed") && body.contains("their own Clio login"),
        "{body}"
    );
    assert!(!body.contains("bob"), "{body}");

    assert!(connections_of(&stack, "carol@firm").await.is_empty());
    let denials = denials_of(&stack, "carol@firm").await;
    assert_eq!(denials.len(), 2, "{denials:?}");
    for denial in &denials {
        let refs = denial.refs.as_ref().unwrap();
        assert_eq!(refs.clio_user_id, clio_user);
        assert_eq!(refs.principal, "carol@firm");
        assert!(refs.connection_id.is_empty());
        assert_eq!(denial.tenant, "firm-a");
        assert!(denial.reason.contains(SHARED_LOGIN), "{}", denial.reason);
        assert!(!format!("{denial:?}").contains("bob@firm"), "{denial:?}");
    }
    // carol's tokens were not kept: both grants were deauthorized at Clio, and bob's
    // connection, which has a grant of its own, still works there.
    poll_until(
        "carol's grants deauthorized",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { (stack.deauthorize_calls().await == 2).then_some(()) },
    )
    .await;
    let token = stack.lease_token(&bob.connection_id).await;
    who_am_i(&stack, SimRegion::Us, &token).await.unwrap();

    // Once bob no longer holds the login, carol may connect with it.
    stack.revoke(&bob.connection_id).await;
    stack.revoke(&bob_elsewhere.connection_id).await;
    let carol = stack.connect(&app, "carol@firm", 7, None).await;
    assert_eq!(carol.clio.unwrap().user_id, clio_user);
    stack.stop().await;
}

#[tokio::test]
async fn a_clio_login_in_another_region_is_another_login() {
    let stack = support::start(Setup::default()).await;
    let us = stack.app(AppOptions::default()).await;
    let eu = stack.eu_app().await;
    stack.connect(&us, "bob@firm", 1, None).await;
    stack.connect(&eu, "carol@firm", 1, None).await;
    stack.stop().await;
}

const OTHER_CONNECTOR: &str = "test-credential-other-connector-0123456789";

/// The test callers and a second connector, `other-connector`.
fn two_connectors() -> Setup {
    Setup {
        tweak: Box::new(|config| {
            config.service.callers.push(CallerCredential {
                name: "other-connector".into(),
                token: Some(SecretString::from(OTHER_CONNECTOR)),
                tls_subject: None,
                roles: vec![Role::Connector],
                tenants: None,
            });
        }),
        ..Setup::default()
    }
}

#[tokio::test]
async fn only_the_caller_that_started_an_authorization_completes_it() {
    let stack = support::start(two_connectors()).await;
    let app = stack.app(AppOptions::default()).await;
    let started = stack.start_oob(&app.app_id, "dora@firm").await;
    let code = stack.approved_code(&started.authorization_url, 1).await;

    let refused = stack
        .complete_with(OTHER_CONNECTOR, &started.state, &code)
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::PermissionDenied,
        "did not start this authorization",
    );
    // Nor through the unauthenticated web callback, which takes web-mode states only.
    let callback = format!(
        "{}?code={code}&state={}",
        stack.callback_uri(),
        started.state
    );
    let page = stack.browser_get(&callback).await;
    assert_eq!(page.status(), 400);
    let body = page.text().await.unwrap();
    assert!(body.contains("out of band"), "{body}");
    assert_eq!(stack.code_exchanges().await, 0, "refused before Clio");

    let denials = denials_of(&stack, "other-connector").await;
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0].tenant, "firm-a");
    assert_eq!(denials[0].refs.as_ref().unwrap().app_id, app.app_id);

    // The refusals did not use the state up: the caller that started it finishes, once.
    let connection = stack.complete(&started.state, &code).await.unwrap();
    assert_eq!(connection.principal, "dora@firm");
    let replayed = stack.complete(&started.state, &code).await.unwrap_err();
    assert_refused(&replayed, Code::FailedPrecondition, "already used");
    let replayed = stack
        .complete_with(OTHER_CONNECTOR, &started.state, &code)
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::PermissionDenied, "{replayed:?}");
    stack.stop().await;
}

#[tokio::test]
async fn a_state_started_before_callers_were_recorded_is_refused() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    let started = stack.start_oob(&app.app_id, "eli@firm").await;
    let code = stack.approved_code(&started.authorization_url, 1).await;
    let mut db = stack.database.connect().await;
    sqlx::query("UPDATE authorization_states SET started_by = NULL")
        .execute(&mut db)
        .await
        .unwrap();
    let refused = stack.complete(&started.state, &code).await.unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "start again");
    stack.stop().await;
}

/// Completing through CompleteAuthorization also works for a web-mode state (a platform
/// app may receive the redirect itself), still only for its starter.
#[tokio::test]
async fn a_web_state_completed_by_rpc_is_bound_to_its_starter_too() {
    let stack = support::start(two_connectors()).await;
    let app = stack.app(AppOptions::default()).await;
    let started = stack.start_web(&app.app_id, "fil@firm").await;
    let code = stack.approved_code(&started.authorization_url, 1).await;
    let refused = stack
        .complete_with(OTHER_CONNECTOR, &started.state, &code)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    stack.complete(&started.state, &code).await.unwrap();
    stack.stop().await;
}
