#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::future::poll_fn;

use http::HeaderValue;
use tower::{Layer, Service};

use super::*;
use crate::metrics::Metrics;

const DECLARED: &str = "/clio_connect.imports.v1.ImportService/GetJob";

/// A body yielding `frames` in turn.
struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}

fn trailers(code: &'static str) -> Frame<Bytes> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(code));
    Frame::trailers(trailers)
}

/// Answers every request with a clone of what `answer` builds.
#[derive(Clone)]
struct Answers(fn() -> http::Response<tonic::body::Body>);

impl Service<http::Request<()>> for Answers {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<()>) -> Self::Future {
        std::future::ready(Ok((self.0)()))
    }
}

fn trailers_only(code: &'static str) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::empty());
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static(code));
    response
}

fn message_then_ok() -> http::Response<tonic::body::Body> {
    let frames = VecDeque::from([
        Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
        trailers("0"),
    ]);
    http::Response::new(tonic::body::Body::new(Frames(frames)))
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .unwrap()
}

/// Sends `request` through the layer and reads the answer's body to its end (or drops it
/// after `frames` frames).
async fn call(
    metrics: &Metrics,
    answer: fn() -> http::Response<tonic::body::Body>,
    request: http::Request<()>,
    frames: Option<usize>,
) {
    let layer = RpcMetricsLayer::new(metrics.rpc(), [DECLARED]);
    let mut service = layer.layer(Answers(answer));
    let response = service.call(request).await.unwrap();
    let mut body = response.into_body();
    let mut read = 0;
    while frames.is_none_or(|limit| read < limit) {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        if frame.is_none() {
            break;
        }
        read += 1;
    }
}

#[test]
fn every_code_has_its_canonical_name() {
    let names: HashSet<&str> = (0..17).map(|n| code_label(Code::from(n))).collect();
    assert_eq!(names.len(), 17);
    assert_eq!(code_label(Code::Ok), "OK");
    assert_eq!(code_label(Code::Unauthenticated), "UNAUTHENTICATED");
    assert_eq!(code_label(Code::FailedPrecondition), "FAILED_PRECONDITION");
}

#[test]
fn the_status_is_read_from_grpc_status() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(status_in(&headers), None);
    headers.insert("grpc-status", HeaderValue::from_static("5"));
    assert_eq!(status_in(&headers), Some(Code::NotFound));
    headers.insert("grpc-status", HeaderValue::from_static("16"));
    assert_eq!(status_in(&headers), Some(Code::Unauthenticated));
    // Not a code: UNKNOWN, as a gRPC client reads it.
    headers.insert("grpc-status", HeaderValue::from_static("banana"));
    assert_eq!(status_in(&headers), Some(Code::Unknown));
}

#[tokio::test]
async fn a_trailers_only_error_is_counted_as_an_error() {
    let metrics = Metrics::new("test");
    call(
        &metrics,
        || trailers_only("7"),
        grpc_request(DECLARED),
        None,
    )
    .await;
    let rendered = metrics.render();
    let labels = format!("{{method=\"{DECLARED}\",code=\"PERMISSION_DENIED\"}} 1");
    assert!(
        rendered.contains(&format!("test_rpc_calls_total{labels}")),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!("test_rpc_errors_total{labels}")),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!(
            "test_rpc_duration_seconds_count{{method=\"{DECLARED}\"}} 1"
        )),
        "{rendered}"
    );
}

#[tokio::test]
async fn the_status_in_the_body_trailers_counts_and_ok_is_no_error() {
    let metrics = Metrics::new("test");
    call(&metrics, message_then_ok, grpc_request(DECLARED), None).await;
    let rendered = metrics.render();
    assert!(
        rendered.contains(&format!(
            "test_rpc_calls_total{{method=\"{DECLARED}\",code=\"OK\"}} 1"
        )),
        "{rendered}"
    );
    assert!(!rendered.contains("test_rpc_errors_total{"), "{rendered}");
}

#[tokio::test]
async fn a_body_dropped_before_its_status_is_cancelled() {
    let metrics = Metrics::new("test");
    call(&metrics, message_then_ok, grpc_request(DECLARED), Some(1)).await;
    let rendered = metrics.render();
    assert!(
        rendered.contains(&format!(
            "test_rpc_calls_total{{method=\"{DECLARED}\",code=\"CANCELLED\"}} 1"
        )),
        "{rendered}"
    );
}

#[tokio::test]
async fn undeclared_paths_share_one_label_and_plain_http_is_not_counted() {
    let metrics = Metrics::new("test");
    for path in ["/attacker.Chosen/One", "/attacker.Chosen/Two"] {
        call(&metrics, || trailers_only("12"), grpc_request(path), None).await;
    }
    call(
        &metrics,
        || trailers_only("0"),
        grpc_request("/grpc.health.v1.Health/Check"),
        None,
    )
    .await;
    let plain = http::Request::builder().uri("/metrics").body(()).unwrap();
    call(&metrics, message_then_ok, plain, None).await;
    let rendered = metrics.render();
    assert!(
        rendered.contains("test_rpc_calls_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 2"),
        "{rendered}"
    );
    assert!(
        rendered.contains(
            "test_rpc_calls_total{method=\"/grpc.health.v1.Health/Check\",code=\"OK\"} 1"
        ),
        "{rendered}"
    );
    assert!(!rendered.contains("attacker"), "{rendered}");
    assert!(!rendered.contains("/metrics"), "{rendered}");
}
