//! What requests may ask: ListConnections' filters and paging, and malformed requests
//! refused as InvalidArgument with the field named.

use std::collections::BTreeSet;

use harness::with_bearer;
use proto::auth::v1 as pb;
use proto::auth::v1::AuthorizationMode::{OutOfBand, Unspecified};
use proto::common::v1::PageRequest;
use tonic::Code;

use crate::support::{self, AppOptions, Setup, SimRegion, Stack, wire_region};

/// ListConnections as the operator, which must be allowed.
async fn list_page(
    stack: &Stack,
    request: pb::ListConnectionsRequest,
) -> pb::ListConnectionsResponse {
    stack
        .client()
        .await
        .list_connections(with_bearer(request, &harness::token_of("operator")))
        .await
        .expect("ListConnections")
        .into_inner()
}

/// The ids ListConnections returns for `request` (one page, large enough).
async fn listed(stack: &Stack, request: pb::ListConnectionsRequest) -> BTreeSet<String> {
    let response = list_page(stack, request).await;
    assert!(response.page.unwrap().next_page_token.is_empty());
    response
        .connections
        .into_iter()
        .map(|c| c.connection_id)
        .collect()
}

fn ids<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

fn region(region: SimRegion) -> i32 {
    wire_region(region)
}

#[tokio::test]
async fn list_connections_filters_and_pages_through_every_connection_once() {
    let stack = support::start(Setup::default()).await;
    // One app per region for lea (tenant firm-a), two Clio users each: US then EU.
    let (apps, lea) = stack.many_connections("lea@firm", 1, 2).await;
    let (us, eu) = (&lea[..2], &lea[2..]);
    let other_tenant = stack
        .app(AppOptions {
            client_id: "billing-app".into(),
            tenant: "firm-b".into(),
            ..AppOptions::default()
        })
        .await;
    // Clio user 3: lea holds users 1 and 2, and a Clio login belongs to one person.
    let mo = stack
        .connect(&other_tenant, "mo@firm", 3, None)
        .await
        .connection_id;
    stack.revoke(&us[0]).await;
    let everyone = ids(lea.iter().chain([&mo]));

    let all = pb::ListConnectionsRequest::default;
    assert_eq!(listed(&stack, all()).await, everyone);
    let by_app = pb::ListConnectionsRequest {
        app_id: apps[0].app_id.clone(),
        ..all()
    };
    assert_eq!(listed(&stack, by_app).await, ids(us));
    let revoked = pb::ListConnectionsRequest {
        status: pb::ConnectionStatus::Revoked as i32,
        ..all()
    };
    assert_eq!(listed(&stack, revoked).await, ids([&us[0]]));
    let in_eu = pb::ListConnectionsRequest {
        region: region(SimRegion::Eu),
        ..all()
    };
    assert_eq!(listed(&stack, in_eu).await, ids(eu));
    let of_firm_b = pb::ListConnectionsRequest {
        tenant: "firm-b".into(),
        ..all()
    };
    assert_eq!(listed(&stack, of_firm_b).await, ids([&mo]));
    let of_lea = pb::ListConnectionsRequest {
        principal: "lea@firm".into(),
        ..all()
    };
    assert_eq!(listed(&stack, of_lea).await, ids(&lea));
    // Filters combine: firm-a's active connections in the US.
    let combined = pb::ListConnectionsRequest {
        tenant: "firm-a".into(),
        status: pb::ConnectionStatus::Active as i32,
        region: region(SimRegion::Us),
        ..all()
    };
    assert_eq!(listed(&stack, combined).await, ids([&us[1]]));

    // Pages of two walk all five connections, each exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let response = list_page(
            &stack,
            pb::ListConnectionsRequest {
                page: Some(PageRequest {
                    page_size: 2,
                    page_token: token,
                }),
                ..all()
            },
        )
        .await;
        pages += 1;
        assert!(response.connections.len() <= 2);
        seen.extend(response.connections.into_iter().map(|c| c.connection_id));
        token = response.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), everyone.len(), "no connection twice: {seen:?}");
    assert_eq!(ids(&seen), everyone);

    for bad in ["not a token!", "AAAA"] {
        let refused = stack
            .client()
            .await
            .list_connections(with_bearer(
                pb::ListConnectionsRequest {
                    page: Some(PageRequest {
                        page_size: 2,
                        page_token: bad.into(),
                    }),
                    ..all()
                },
                &harness::token_of("operator"),
            ))
            .await
            .unwrap_err();
        assert_invalid(&refused, "page.page_token", bad);
    }
    stack.stop().await;
}

/// Refused as InvalidArgument with a message that starts by naming `field`, and the field
/// in the standard `BadRequest` detail a client in any language reads.
#[track_caller]
fn assert_invalid(status: &tonic::Status, field: &str, case: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{case}: the message should name {field}: {}",
        status.message()
    );
    let violations = proto::FieldViolation::of(status);
    assert_eq!(
        violations
            .iter()
            .map(|v| v.field.as_str())
            .collect::<Vec<_>>(),
        [field],
        "{case}: {violations:?}"
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_naming_the_field() {
    let stack = support::start(Setup::default()).await;
    let (app, connection) = stack.app_with_connection("nia@firm").await;
    let connection_id = connection.connection_id.as_str();
    let mut client = stack.client().await;
    let as_caller = |caller: &str| harness::token_of(caller);
    let offboard = |principal: &str, reason: &str| pb::OffboardUserRequest {
        principal: principal.into(),
        reason: reason.into(),
        tenant: String::new(),
        departed_at: None,
    };
    let revoke = |connection_id: &str, reason: &str| pb::RevokeConnectionRequest {
        connection_id: connection_id.into(),
        reason: reason.into(),
    };
    let lease = |purpose: &str| pb::LeaseAccessTokenRequest {
        connection_id: connection_id.into(),
        required_scopes: vec![support::scope("contacts:read")],
        purpose: purpose.into(),
        force_refresh: false,
    };

    let cases: Vec<(&str, &str, tonic::Status)> = vec![
        (
            "StartAuthorization without app_id",
            "app_id",
            stack
                .start_authorization("", "nia@firm", OutOfBand, None)
                .await
                .unwrap_err(),
        ),
        (
            "StartAuthorization without principal",
            "principal",
            stack
                .start_authorization(&app.app_id, " ", OutOfBand, None)
                .await
                .unwrap_err(),
        ),
        (
            "StartAuthorization without a mode",
            "mode",
            stack
                .start_authorization(&app.app_id, "nia@firm", Unspecified, None)
                .await
                .unwrap_err(),
        ),
        (
            "OffboardUser without principal",
            "principal",
            client
                .offboard_user(with_bearer(offboard("", "left"), &as_caller("operator")))
                .await
                .unwrap_err(),
        ),
        (
            "OffboardUser without reason",
            "reason",
            client
                .offboard_user(with_bearer(
                    offboard("nia@firm", ""),
                    &as_caller("operator"),
                ))
                .await
                .unwrap_err(),
        ),
        (
            "RevokeConnection with a malformed connection_id",
            "connection_id",
            client
                .revoke_connection(with_bearer(
                    revoke("conn-1", "left"),
                    &as_caller("operator"),
                ))
                .await
                .unwrap_err(),
        ),
        (
            "RevokeConnection without reason",
            "reason",
            client
                .revoke_connection(with_bearer(
                    revoke(connection_id, "  "),
                    &as_caller("operator"),
                ))
                .await
                .unwrap_err(),
        ),
        (
            "CompleteAuthorization with an empty code",
            "code",
            stack.complete("some-state", "").await.unwrap_err(),
        ),
        (
            "CompleteAuthorization with a blank pasted code",
            "code",
            stack
                .complete("some-state", "Success code= ")
                .await
                .unwrap_err(),
        ),
        (
            "LeaseAccessToken without purpose",
            "purpose",
            client
                .lease_access_token(with_bearer(lease(""), &as_caller("import")))
                .await
                .unwrap_err(),
        ),
    ];
    for (case, field, status) in &cases {
        assert_invalid(status, field, case);
    }
    // None of them changed anything.
    let still = stack.connection(connection_id).await;
    assert_eq!(
        support::status_of(still.status),
        pb::ConnectionStatus::Active
    );
    stack.stop().await;
}
