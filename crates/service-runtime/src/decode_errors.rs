//! A request whose protobuf cannot be decoded is the caller's error, not the server's.
//!
//! tonic answers a message it cannot decode (a string field that is not UTF-8, a truncated
//! message) with `INTERNAL "failed to decode Protobuf message: ImportJob.requested_by:
//! invalid string value: data is not UTF-8 encoded"`. The message already names the field;
//! only the code is wrong, and a client seeing INTERNAL may retry. This layer turns that one
//! answer into `INVALID_ARGUMENT`, leaving every other status untouched.

use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::HeaderValue;

/// What tonic's prost codec says about a message it cannot decode (as sent in
/// `grpc-message`, percent-encoded or not).
const DECODE_FAILURE: &[&str] = &[
    "failed to decode Protobuf message",
    "failed%20to%20decode%20Protobuf%20message",
];

/// The gRPC status codes involved.
const INTERNAL: &str = "13";
const INVALID_ARGUMENT: &str = "3";

#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct DecodeErrorsService<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for DecodeErrorsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            reclassify(response.headers_mut());
            Ok(response)
        })
    }
}

/// INTERNAL for an undecodable request becomes INVALID_ARGUMENT (trailers-only answers
/// carry the status in the headers, which is how tonic refuses a request it cannot read).
fn reclassify(headers: &mut http::HeaderMap) {
    let internal = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == INTERNAL.as_bytes());
    let undecodable = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| DECODE_FAILURE.iter().any(|m| message.starts_with(m)));
    if internal && undecodable {
        headers.insert("grpc-status", HeaderValue::from_static(INVALID_ARGUMENT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(status));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        headers
    }

    #[test]
    fn only_an_undecodable_request_changes_code() {
        let mut undecodable = headers(
            "13",
            "failed%20to%20decode%20Protobuf%20message:%20ImportJob.requested_by",
        );
        reclassify(&mut undecodable);
        assert_eq!(undecodable["grpc-status"], "3");

        let mut other_internal = headers("13", "database%20exploded");
        reclassify(&mut other_internal);
        assert_eq!(other_internal["grpc-status"], "13");

        let mut unavailable = headers("14", "failed%20to%20decode%20Protobuf%20message");
        reclassify(&mut unavailable);
        assert_eq!(unavailable["grpc-status"], "14");
    }
}
