//! What every service must do before it does anything else: boot on a random port, report
//! health from its dependencies, list itself through reflection, refuse callers without a
//! credential or the right role, stop gracefully, and refuse a bad config at start-up.

use std::process::Command;

use harness::{
    ServingStatus, TcpProxy, TestDatabase, channel, reflection_services, token_of, wait_for_health,
    with_bearer,
};
use tonic::Code;

use crate::services::{Service, start, start_with_database_url};

/// One call per service to an RPC that needs a credential.
async fn protected_call(kind: Service, address: std::net::SocketAddr, token: Option<&str>) -> Code {
    let channel = channel(address).await;
    fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        match token {
            Some(token) => with_bearer(message, token),
            None => tonic::Request::new(message),
        }
    }
    let outcome = match kind {
        Service::Auth => {
            use proto::auth::v1::{ListAppsRequest, auth_service_client::AuthServiceClient};
            AuthServiceClient::new(channel)
                .list_apps(request(ListAppsRequest::default(), token))
                .await
                .map(drop)
        }
        Service::Import => {
            use proto::imports::v1::{ListJobsRequest, import_service_client::ImportServiceClient};
            ImportServiceClient::new(channel)
                .list_jobs(request(ListJobsRequest::default(), token))
                .await
                .map(drop)
        }
        Service::Audit => {
            use proto::audit::v1::{VerifyRequest, audit_service_client::AuditServiceClient};
            AuditServiceClient::new(channel)
                .verify(request(
                    VerifyRequest {
                        tenant: "firm".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop)
        }
    };
    match outcome {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A caller whose role the probed RPC allows.
fn allowed_caller(kind: Service) -> &'static str {
    match kind {
        Service::Auth => "operator",
        Service::Import => "job_submitter",
        Service::Audit => "compliance",
    }
}

#[tokio::test]
async fn each_service_boots_reports_serving_and_lists_itself() {
    for kind in Service::ALL {
        let running = start(kind).await;
        for service in kind.grpc_services() {
            wait_for_health(running.address, service, ServingStatus::Serving).await;
        }
        wait_for_health(running.address, "", ServingStatus::Serving).await;
        let listed = reflection_services(channel(running.address).await).await;
        for service in kind.grpc_services() {
            assert!(
                listed.iter().any(|s| s == service),
                "{kind:?} does not list {service}: {listed:?}"
            );
        }
        assert!(
            listed.iter().any(|s| s == "grpc.health.v1.Health"),
            "{listed:?}"
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn callers_need_a_known_credential_and_an_allowed_role() {
    for kind in Service::ALL {
        let running = start(kind).await;
        assert_eq!(
            protected_call(kind, running.address, None).await,
            Code::Unauthenticated,
            "{kind:?}"
        );
        assert_eq!(
            protected_call(kind, running.address, Some("not-a-known-credential-at-all")).await,
            Code::Unauthenticated,
            "{kind:?}"
        );
        // data_reader may only read imported records.
        let wrong_role = if kind == Service::Import {
            "audit_writer"
        } else {
            "data_reader"
        };
        assert_eq!(
            protected_call(kind, running.address, Some(&token_of(wrong_role))).await,
            Code::PermissionDenied,
            "{kind:?}"
        );
        let allowed =
            protected_call(kind, running.address, Some(&token_of(allowed_caller(kind)))).await;
        assert!(
            !matches!(allowed, Code::Unauthenticated | Code::PermissionDenied),
            "{kind:?}: the allowed caller was refused with {allowed:?}"
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn metrics_are_served_over_plain_http_on_the_same_port() {
    let running = start(Service::Audit).await;
    wait_for_health(running.address, "", ServingStatus::Serving).await;
    // One refused call, so the counter has a sample.
    protected_call(Service::Audit, running.address, None).await;
    let body = reqwest::get(format!("http://{}/metrics", running.address))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("audit_svc_rpc_calls_total"), "{body}");
    assert!(body.contains("outcome=\"unauthenticated\""), "{body}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn health_follows_postgres_and_shutdown() {
    let database = TestDatabase::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = database
        .url
        .replace("127.0.0.1:5432", &proxy.address.to_string());
    let running = start_with_database_url(Service::Audit, database, Some(url)).await;
    wait_for_health(running.address, "", ServingStatus::Serving).await;

    proxy.cut();
    wait_for_health(running.address, "", ServingStatus::NotServing).await;
    proxy.restore();
    wait_for_health(running.address, "", ServingStatus::Serving).await;

    // Graceful stop: run() returns Ok and the port stops answering.
    let address = running.address;
    running.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn a_bad_config_value_stops_start_up_naming_the_field() {
    for kind in Service::ALL {
        let prefix = kind.env_prefix();
        for (variable, value, field) in [
            ("SERVICE__LISTEN", "not-an-address", "service.listen"),
            (
                "SERVICE__DATABASE__MAX_CONNECTIONS",
                "0",
                "service.database.max_connections",
            ),
            (
                "SERVICE__DATABASE__URL",
                "mysql://nope/x",
                "service.database.url",
            ),
        ] {
            let output = Command::new(harness::service_binary(kind.binary()))
                .env(format!("{prefix}{variable}"), value)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{kind:?} {variable}: {stderr}"
            );
            assert!(
                stderr.contains(field),
                "{kind:?}: {stderr} does not name {field}"
            );
        }
    }
}
