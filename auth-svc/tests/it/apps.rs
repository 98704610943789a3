//! App registrations: validated, approved (or rejected) by compliance before use, scope
//! changes versioned and audited.

use harness::with_bearer;
use proto::auth::v1 as pb;
use proto::common::v1::{EventKind, ScopeJustification};
use tonic::Code;

use crate::support::{self, AppOptions, Setup, assert_refused, scope};

fn registration() -> pb::RegisterAppRequest {
    pb::RegisterAppRequest {
        tenant: "firm-a".into(),
        name: "client import".into(),
        region: proto::common::v1::Region::Us as i32,
        client_id: "cid-apps".into(),
        client_secret: "apps-test-secret".into(),
        redirect_uris: vec!["https://auth.firm.example/oauth/callback".into()],
        declared_scopes: vec![ScopeJustification {
            scope: Some(scope("contacts:read")),
            justification: "the client import".into(),
        }],
        pkce_enabled: false,
    }
}

#[tokio::test]
async fn an_app_is_usable_only_once_compliance_approved_its_current_scopes() {
    let stack = support::start(Setup::default()).await;
    let mut client = stack.client().await;
    let operator = harness::token_of("operator");
    let compliance = harness::token_of("compliance");

    for (field, broken) in [
        (
            "tenant",
            pb::RegisterAppRequest {
                tenant: " ".into(),
                ..registration()
            },
        ),
        (
            "region",
            pb::RegisterAppRequest {
                region: 0,
                ..registration()
            },
        ),
        (
            "client_secret",
            pb::RegisterAppRequest {
                client_secret: String::new(),
                ..registration()
            },
        ),
        (
            "redirect_uris[0]",
            pb::RegisterAppRequest {
                redirect_uris: vec!["not a url".into()],
                ..registration()
            },
        ),
        (
            "declared_scopes[0].justification",
            pb::RegisterAppRequest {
                declared_scopes: vec![ScopeJustification {
                    scope: Some(scope("contacts:read")),
                    justification: String::new(),
                }],
                ..registration()
            },
        ),
    ] {
        let refused = client
            .register_app(with_bearer(broken, &operator))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{field}: {refused:?}"
        );
        assert!(
            refused.message().starts_with(field),
            "{field}: {}",
            refused.message()
        );
    }

    let app = client
        .register_app(with_bearer(registration(), &operator))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pb::AppStatus::try_from(app.status).unwrap(),
        pb::AppStatus::PendingApproval
    );
    let duplicate = client
        .register_app(with_bearer(registration(), &operator))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let pending = stack
        .start_authorization(&app.app_id, "ada@firm", pb::AuthorizationMode::Web, None)
        .await
        .unwrap_err();
    assert_refused(&pending, Code::FailedPrecondition, "approval");

    let approve = |version| pb::ApproveAppRequest {
        app_id: app.app_id.clone(),
        scopes_version: version,
        note: "ok".into(),
    };
    let by_operator = client
        .approve_app(with_bearer(approve(1), &operator))
        .await
        .unwrap_err();
    assert_eq!(by_operator.code(), Code::PermissionDenied);
    let stale = client
        .approve_app(with_bearer(approve(7), &compliance))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let approved = client
        .approve_app(with_bearer(approve(1), &compliance))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.approved_by, "compliance");

    let changed = client
        .update_app_scopes(with_bearer(
            pb::UpdateAppScopesRequest {
                app_id: app.app_id.clone(),
                declared_scopes: vec![
                    ScopeJustification {
                        scope: Some(scope("contacts:read")),
                        justification: "the client import".into(),
                    },
                    ScopeJustification {
                        scope: Some(scope("activities:write")),
                        justification: "approved time entries".into(),
                    },
                ],
                reason: "billing assistant".into(),
            },
            &operator,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.scopes_version, 2);
    assert_eq!(
        pb::AppStatus::try_from(changed.status).unwrap(),
        pb::AppStatus::PendingApproval
    );
    assert_eq!(changed.risk_tier, proto::common::v1::RiskTier::High as i32);
    let events = stack.outbox().await;
    let scope_change = events
        .iter()
        .find(|(kind, _)| *kind == EventKind::AppScopesChanged)
        .expect("the change is audited");
    assert_eq!(scope_change.1.reason, "billing assistant");
    assert!(
        events
            .iter()
            .any(|(kind, e)| *kind == EventKind::AccessDenied
                && e.actor.as_ref().unwrap().id == "operator"),
        "the refused approval is audited"
    );
    stack.stop().await;
}

#[tokio::test]
async fn compliance_rejects_a_pending_app_with_a_reason_and_a_revision_asks_again() {
    let stack = support::start(Setup::default()).await;
    let mut client = stack.client().await;
    let operator = harness::token_of("operator");
    let compliance = harness::token_of("compliance");
    let app = client
        .register_app(with_bearer(registration(), &operator))
        .await
        .unwrap()
        .into_inner();
    let reject = |version, note: &str| pb::RejectAppRequest {
        app_id: app.app_id.clone(),
        scopes_version: version,
        note: note.into(),
    };

    let by_operator = client
        .reject_app(with_bearer(reject(1, "no"), &operator))
        .await
        .unwrap_err();
    assert_eq!(by_operator.code(), Code::PermissionDenied);
    let silent = client
        .reject_app(with_bearer(reject(1, "  "), &compliance))
        .await
        .unwrap_err();
    assert_refused(&silent, Code::InvalidArgument, "note");
    let stale = client
        .reject_app(with_bearer(reject(3, "too broad"), &compliance))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);

    let rejected = client
        .reject_app(with_bearer(
            reject(1, "contacts are not needed"),
            &compliance,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.status, pb::AppStatus::Rejected as i32);
    assert_eq!(rejected.rejected_by, "compliance");
    assert_eq!(rejected.rejection_note, "contacts are not needed");
    assert!(rejected.rejected_at.is_some());
    // Nobody connects through it, it cannot be approved as it stands, nor rejected twice.
    let connect = stack
        .start_authorization(&app.app_id, "ada@firm", pb::AuthorizationMode::Web, None)
        .await
        .unwrap_err();
    assert_refused(&connect, Code::FailedPrecondition, "rejected");
    let approve = pb::ApproveAppRequest {
        app_id: app.app_id.clone(),
        scopes_version: 1,
        note: "ok".into(),
    };
    let approval = client
        .approve_app(with_bearer(approve.clone(), &compliance))
        .await
        .unwrap_err();
    assert_refused(&approval, Code::FailedPrecondition, "rejected");
    let again = client
        .reject_app(with_bearer(reject(1, "still no"), &compliance))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Revised, it waits for a decision again, the rejection cleared.
    let revised = client
        .update_app_scopes(with_bearer(
            pb::UpdateAppScopesRequest {
                app_id: app.app_id.clone(),
                declared_scopes: vec![ScopeJustification {
                    scope: Some(scope("matters:read")),
                    justification: "matter list only".into(),
                }],
                reason: "as compliance asked".into(),
            },
            &operator,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revised.status, pb::AppStatus::PendingApproval as i32);
    assert_eq!(revised.rejected_by, "");
    let approved = client
        .approve_app(with_bearer(
            pb::ApproveAppRequest {
                scopes_version: 2,
                ..approve
            },
            &compliance,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.status, pb::AppStatus::Approved as i32);

    let events = stack.outbox().await;
    let rejection = events
        .iter()
        .find(|(kind, _)| *kind == EventKind::AppRejected)
        .expect("the rejection is audited");
    assert_eq!(rejection.1.reason, "contacts are not needed");
    assert_eq!(rejection.1.actor.as_ref().unwrap().id, "compliance");
    stack.stop().await;
}

#[tokio::test]
async fn registered_apps_never_show_their_secret() {
    let stack = support::start(Setup::default()).await;
    let app = stack.app(AppOptions::default()).await;
    let shown = stack
        .client()
        .await
        .get_app(with_bearer(
            pb::GetAppRequest {
                app_id: app.app_id.clone(),
            },
            &harness::token_of("connector"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{shown:?}").contains(&app.client_secret));
    assert_eq!(shown.client_id, app.client_id);
    stack.stop().await;
}

/// ReplaceAppSecret as `caller`.
async fn replace_secret(
    stack: &support::Stack,
    caller: &str,
    request: pb::ReplaceAppSecretRequest,
) -> Result<pb::AppRegistration, tonic::Status> {
    stack
        .client()
        .await
        .replace_app_secret(with_bearer(request, &harness::token_of(caller)))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_secret_regenerated_at_clio_is_replaced_and_refreshes_work_again_at_once() {
    let stack = support::start(Setup::default()).await;
    let (app, connection) = stack.app_with_connection("dana@firm.example").await;

    // The secret is regenerated in Clio's developer portal: the stored one stops working.
    let regenerated = "regenerated-client-secret-7f3a9c";
    stack
        .sim
        .admin()
        .register_app(
            clio_sim::Region::Us,
            &clio_sim::AppSpec {
                client_id: app.client_id.clone(),
                client_secret: regenerated.into(),
                redirect_uris: vec![
                    stack.callback_uri(),
                    stack.approval_uri(clio_sim::Region::Us),
                ],
                permissions: vec!["contacts:read".into(), "matters:read".into()],
            },
        )
        .await
        .unwrap();
    let refused = stack
        .lease_as(
            "import",
            &connection.connection_id,
            &["contacts:read"],
            true,
        )
        .await
        .unwrap_err();
    assert_refused(&refused, Code::FailedPrecondition, "invalid_client");

    // Bad requests name their field; only an operator may replace; an unknown app is named.
    let request = |client_secret: &str| pb::ReplaceAppSecretRequest {
        app_id: app.app_id.clone(),
        client_secret: client_secret.into(),
        reason: "regenerated after a laptop was lost".into(),
    };
    for (field, bad) in [
        ("client_secret", request("  ")),
        ("client_secret", request("line\nbreak")),
        (
            "reason",
            pb::ReplaceAppSecretRequest {
                reason: String::new(),
                ..request(regenerated)
            },
        ),
        (
            "app_id",
            pb::ReplaceAppSecretRequest {
                app_id: "not-a-uuid".into(),
                ..request(regenerated)
            },
        ),
    ] {
        let status = replace_secret(&stack, "operator", bad).await.unwrap_err();
        assert_refused(&status, Code::InvalidArgument, field);
        assert!(
            !status.message().contains("line"),
            "no secret echoed: {status:?}"
        );
    }
    let status = replace_secret(&stack, "compliance", request(regenerated))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = replace_secret(
        &stack,
        "operator",
        pb::ReplaceAppSecretRequest {
            app_id: uuid::Uuid::new_v4().to_string(),
            ..request(regenerated)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Replaced: the connection refreshes at once, without waiting out its back-off.
    let replaced = replace_secret(&stack, "operator", request(regenerated))
        .await
        .unwrap();
    assert_eq!(replaced.app_id, app.app_id);
    stack
        .lease_as(
            "import",
            &connection.connection_id,
            &["contacts:read"],
            true,
        )
        .await
        .expect("a refresh with the new secret");

    // Audited without the secret; stored only sealed.
    let events: Vec<_> = stack
        .outbox()
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == EventKind::AppSecretReplaced)
        .map(|(_, event)| event)
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let payload = support::payload_of(&events[0]);
    assert_eq!(payload["connections_retried"], 1, "{payload}");
    assert!(!events[0].payload_json.contains(regenerated));
    assert_eq!(events[0].reason, "regenerated after a laptop was lost");
    let mut db = stack.database.connect().await;
    let stored: Vec<u8> = sqlx::query_scalar(
        "SELECT client_secret_ct FROM app_registrations WHERE app_id = $1::uuid",
    )
    .bind(&app.app_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(
        !stored
            .windows(regenerated.len())
            .any(|w| w == regenerated.as_bytes()),
        "the secret is stored sealed"
    );
    stack.stop().await;
}
