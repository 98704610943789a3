//! gRPC probes: channels, health and reflection.

use std::net::SocketAddr;

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

pub async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("channel uri")
        .connect()
        .await
        .expect("connect to service")
}

/// A request carrying `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

pub async fn health_status(
    channel: Channel,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// Waits (bounded) until the server at `address` reports `wanted` for `service` ("" for
/// the server as a whole).
pub async fn wait_for_health(address: SocketAddr, service: &str, wanted: ServingStatus) {
    crate::poll_until(
        &format!("{service:?} at {address} to be {wanted:?}"),
        // A cold start on a busy 2-core machine (migrations, first connections) is slow.
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(50),
        || async {
            let status = health_status(channel(address).await, service).await.ok()?;
            (status == wanted).then_some(())
        },
    )
    .await;
}

/// The service names a server lists through reflection.
pub async fn reflection_services(channel: Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection call")
        .into_inner();
    let response = stream
        .next()
        .await
        .expect("a reflection response")
        .expect("reflection ok");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

/// The events audit-svc at `address` holds for `tenant`, of `kinds` (all kinds when
/// empty), read as the `compliance` caller.
pub async fn audit_events(
    address: SocketAddr,
    tenant: &str,
    kinds: &[proto::common::v1::EventKind],
) -> Result<Vec<proto::common::v1::AuditEvent>, tonic::Status> {
    let request = proto::audit::v1::QueryRequest {
        tenant: tenant.into(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        ..Default::default()
    };
    let answer =
        proto::audit::v1::audit_service_client::AuditServiceClient::new(channel(address).await)
            .query(with_bearer(request, &crate::token_of("compliance")))
            .await?;
    Ok(answer.into_inner().events)
}
