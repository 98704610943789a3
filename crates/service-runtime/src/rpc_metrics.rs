//! RED metrics of every gRPC call a service serves: calls by method and status code,
//! errors (every code but OK), and latency per method.
//!
//! The layer sits outside the caller-auth layer, so a refused call is counted with the
//! status its caller saw. The status is read where gRPC puts it: the headers of a
//! trailers-only answer (refusals, and most errors a handler returns), otherwise the
//! trailers that end the response body (every OK answer and every server stream). A call
//! is recorded once its status is known, and its latency runs until then: for a server
//! stream (`WatchJob`, `Watch`, `Export`) that is how long the stream stayed open. A body
//! dropped before any status means the client went away: CANCELLED, as the client saw it.
//!
//! Labels are bounded. The method is the call's path only for an RPC the service declares
//! (its access policy, plus health and reflection), [`UNKNOWN_METHOD`] for any other path
//! a caller invents; the code is one of gRPC's 17 names. Plain HTTP requests (`/metrics`,
//! the OAuth callback) are not gRPC calls and are not counted.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;
use tonic::codegen::Bytes;

pub use crate::caller_auth::UNKNOWN_METHOD;

/// Latency buckets in seconds, 0.5 ms to 10 s: a cached lookup answers in well under a
/// millisecond, a call that waits on Clio or a slow database in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Calls every server answers besides the service's own: health and reflection.
const INFRASTRUCTURE_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A histogram on [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A family of latency histograms, one per label set.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// An empty family of latency histograms on [`LATENCY_BUCKETS`].
pub fn latency_histograms<L>() -> Histograms<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(latency_histogram)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerAuthLabels {
    method: String,
    outcome: &'static str,
}

/// The gRPC families of a service's registry.
#[derive(Clone)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    errors: Family<CallLabels, Counter>,
    latency: Histograms<MethodLabels>,
    caller_auth: Family<CallerAuthLabels, Counter>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            calls: Family::default(),
            errors: Family::default(),
            latency: latency_histograms(),
            caller_auth: Family::default(),
        }
    }
}

impl RpcMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "rpc_calls",
            "gRPC calls served, by method and status code",
            self.calls.clone(),
        );
        registry.register(
            "rpc_errors",
            "gRPC calls answered with a status other than OK, by method and status code",
            self.errors.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Time from a gRPC request to its status, by method (a server stream: how long it was open)",
            self.latency.clone(),
        );
        registry.register(
            "rpc_caller_auth",
            "Caller-auth decisions by method: allowed, unauthenticated or permission_denied",
            self.caller_auth.clone(),
        );
    }

    /// A caller-auth decision (see [`crate::caller_auth`]).
    pub(crate) fn record(&self, method: &str, outcome: &'static str) {
        self.caller_auth
            .get_or_create(&CallerAuthLabels {
                method: method.to_owned(),
                outcome,
            })
            .inc();
    }

    fn finished(&self, method: String, code: Code, elapsed: Duration) {
        let labels = CallLabels {
            method,
            code: code_label(code),
        };
        self.calls.get_or_create(&labels).inc();
        if code != Code::Ok {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency
            .get_or_create(&MethodLabels {
                method: labels.method,
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// gRPC's canonical name of `code` (as in the status codes document).
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status in `grpc-status`, if the headers (or trailers) carry one. A value that is
/// not a code is UNKNOWN, as gRPC clients read it.
pub fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Tower layer recording [`RpcMetrics`] for every gRPC call.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: RpcMetrics,
    declared: Arc<HashSet<String>>,
}

impl RpcMetricsLayer {
    /// Labels calls to the `declared` paths (`/package.Service/Method`) by their path.
    pub fn new<'a>(metrics: RpcMetrics, declared: impl IntoIterator<Item = &'a str>) -> Self {
        let declared = declared
            .into_iter()
            .chain(INFRASTRUCTURE_METHODS.iter().copied())
            .map(str::to_owned)
            .collect();
        RpcMetricsLayer {
            metrics,
            declared: Arc::new(declared),
        }
    }

    fn method_label(&self, path: &str) -> String {
        if self.declared.contains(path) {
            path.to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

impl<S, B> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !is_grpc(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        // Recorded when dropped: if this future is dropped unfinished (the client went
        // away before an answer), the call counts as CANCELLED.
        let mut call = Call {
            metrics: self.layer.metrics.clone(),
            method: self.layer.method_label(request.uri().path()),
            started: Instant::now(),
            code: None,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = match answer.await {
                Ok(response) => response,
                Err(error) => {
                    call.ended(Code::Unknown);
                    return Err(error);
                }
            };
            if let Some(code) = status_in(response.headers()) {
                call.ended(code);
                return Ok(response);
            }
            if response.body().is_end_stream() {
                // No status in the headers and no body to bring trailers.
                call.ended(Code::Unknown);
                return Ok(response);
            }
            Ok(response.map(|inner| {
                tonic::body::Body::new(ObservedBody {
                    inner,
                    call: Some(call),
                })
            }))
        })
    }
}

/// One call in flight; recorded when dropped, with its code (CANCELLED if none was seen).
struct Call {
    metrics: RpcMetrics,
    method: String,
    started: Instant,
    code: Option<Code>,
}

impl Call {
    /// The call's status; it is recorded when the call is dropped.
    fn ended(&mut self, code: Code) {
        self.code = Some(code);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let method = std::mem::take(&mut self.method);
        let code = self.code.unwrap_or(Code::Cancelled);
        self.metrics.finished(method, code, self.started.elapsed());
    }
}

/// A response body that records its call when the trailers (or the end) go by.
struct ObservedBody {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Pending => return polled,
            Poll::Ready(Some(Ok(frame))) => match frame.trailers_ref() {
                Some(trailers) => status_in(trailers).unwrap_or(Code::Unknown),
                None => return polled,
            },
            Poll::Ready(Some(Err(status))) => status.code(),
            // Ended without trailers: nothing told the client how the call went.
            Poll::Ready(None) => Code::Unknown,
        };
        if let Some(mut call) = this.call.take() {
            call.ended(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
