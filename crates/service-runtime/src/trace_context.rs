//! W3C trace context (`traceparent`, `tracestate`) across the process boundaries of
//! clio-connect, so one import's spans in every service share one trace id.
//!
//! - gRPC servers: [`ServerTraceLayer`] gives every call a span named for its method whose
//!   parent is the caller's `traceparent` (wired in [`crate::server`]).
//! - gRPC clients: [`WithTraceContext`] wraps a client's interceptor and adds the current
//!   span's context to every call.
//! - Other carriers (AMQP headers, the audit outbox row): [`inject_current`],
//!   [`current_traceparent`], [`set_remote_parent`], [`set_parent_from_traceparent`],
//!   [`link_traceparent`] and [`link_to`] over any [`Injector`] / [`Extractor`] or a bare
//!   `traceparent`.
//!
//! Nothing here is more than a hint: a missing or malformed `traceparent` starts a new
//! trace, never refuses a call or a message. Without the OpenTelemetry layer installed
//! ([`crate::telemetry::init`], e.g. services run in-process by tests) spans have no
//! context and nothing is injected.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
pub use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries the trace id, the parent span id and the sampled flag.
pub const TRACEPARENT: &str = "traceparent";

/// Writes `cx` into `carrier`; nothing when it holds no valid span context.
pub fn inject(cx: &Context, carrier: &mut dyn Injector) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, carrier);
    }
}

/// Writes the current span's context into `carrier`.
pub fn inject_current(carrier: &mut dyn Injector) {
    inject(&Span::current().context(), carrier);
}

/// The remote context `carrier` holds (an empty one when it holds none or a bad one).
pub fn extract(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// The current span's `traceparent`, for a carrier that is a single value (the audit
/// outbox row). `None` when the current span is not traced.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = std::collections::HashMap::new();
    inject_current(&mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` (not yet entered) a child of the remote context in `carrier`. False, and
/// `span` keeps its local parent, when the carrier holds no valid context.
pub fn set_remote_parent(span: &Span, carrier: &dyn Extractor) -> bool {
    let parent = extract(carrier);
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

/// [`set_remote_parent`] from a bare `traceparent` value.
pub fn set_parent_from_traceparent(span: &Span, traceparent: &str) -> bool {
    set_remote_parent(span, &SingleHeader(traceparent))
}

/// Links `span` to the remote span a `traceparent` names (for work done on behalf of many
/// traces at once, like a batch); nothing when the value is not a valid context.
pub fn link_traceparent(span: &Span, traceparent: &str) {
    let remote = extract(&SingleHeader(traceparent));
    span.add_link(remote.span().span_context().clone());
}

/// Links `span` to the local span `to` (an event's span to the batch call that carried it,
/// when the event's own parent is elsewhere).
pub fn link_to(span: &Span, to: &Span) {
    span.add_link(to.context().span().span_context().clone());
}

/// A carrier of nothing but a `traceparent`.
struct SingleHeader<'a>(&'a str);

impl Extractor for SingleHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// gRPC metadata (tonic) as a carrier.
pub struct MetadataCarrier<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only writes its own lowercase ASCII names and values; anything
        // else is left out rather than failing the call.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// HTTP headers as a carrier (what the server layer sees).
struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A client interceptor that adds the current span's trace context, then runs `inner`
/// (e.g. the bearer credential): `AuthServiceClient::with_interceptor(channel,
/// WithTraceContext(bearer))`.
#[derive(Debug, Clone)]
pub struct WithTraceContext<I>(pub I);

impl<I: tonic::service::Interceptor> tonic::service::Interceptor for WithTraceContext<I> {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(&mut MetadataCarrier(request.metadata_mut()));
        self.0.call(request)
    }
}

/// Gives every gRPC call a server span (`otel.name` = `package.Service/Method`) whose
/// parent is the caller's `traceparent`. Health checks, reflection and plain HTTP
/// (`/metrics`, callbacks) pass untraced: probes every few seconds would bury the traces
/// worth reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(span) = server_span(&request) else {
            return Box::pin(self.inner.call(request));
        };
        let called = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = called.await;
                if let Ok(response) = &response {
                    record_status(&recorded, response.headers());
                }
                response
            }
            .instrument(span),
        )
    }
}

/// The span of a gRPC call, or none for calls and requests that are not traced.
fn server_span<B>(request: &http::Request<B>) -> Option<Span> {
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    let path = request.uri().path();
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if !is_grpc || service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return None;
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    set_remote_parent(&span, &HeaderCarrier(request.headers()));
    Some(span)
}

/// A refusal's status travels in the response headers (a trailers-only response); a
/// success's comes in trailers, which a layer does not wait for, so only errors are marked.
fn record_status(span: &Span, headers: &http::HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "error");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry::trace::{TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tonic::service::Interceptor;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    fn with_tracing<T>(run: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, run)
    }

    fn trace_id_of(span: &Span) -> TraceId {
        span.context().span().span_context().trace_id()
    }

    #[test]
    fn a_context_goes_into_grpc_metadata_and_comes_back_out() {
        with_tracing(|| {
            let parent = tracing::info_span!("parent");
            let _entered = parent.enter();
            let untouched = |request: tonic::Request<()>| Ok(request);
            let request = WithTraceContext(untouched)
                .call(tonic::Request::new(()))
                .unwrap();
            let headers = request.metadata().clone().into_headers();
            let child = tracing::info_span!(parent: None, "child");
            assert!(set_remote_parent(&child, &HeaderCarrier(&headers)));
            assert_eq!(trace_id_of(&child), trace_id_of(&parent));
        });
    }

    #[test]
    fn a_bare_traceparent_parents_a_span() {
        with_tracing(|| {
            let span = tracing::info_span!("job");
            assert!(set_parent_from_traceparent(
                &span,
                &format!("00-{TRACE}-{PARENT}-01")
            ));
            assert_eq!(trace_id_of(&span).to_string(), TRACE);
            let _entered = span.enter();
            let carried = current_traceparent().unwrap();
            assert!(carried.starts_with(&format!("00-{TRACE}-")), "{carried}");
            assert!(
                !carried.contains(PARENT),
                "the child's own id is carried on"
            );
        });
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        with_tracing(|| {
            for bad in [
                "",
                "garbage",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ] {
                let span = tracing::info_span!("job");
                assert!(!set_parent_from_traceparent(&span, bad), "{bad:?}");
                assert!(trace_id_of(&span) != TraceId::INVALID);
            }
        });
    }

    #[test]
    fn without_the_layer_nothing_is_carried() {
        let span = tracing::info_span!("untraced");
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn grpc_calls_get_a_span_and_probes_and_plain_http_do_not() {
        with_tracing(|| {
            let request = |path: &str, content_type: &str| {
                http::Request::builder()
                    .uri(path)
                    .header(http::header::CONTENT_TYPE, content_type)
                    .header(TRACEPARENT, format!("00-{TRACE}-{PARENT}-01"))
                    .body(())
                    .unwrap()
            };
            let call = request(
                "/clio_connect.imports.v1.ImportService/SubmitJob",
                "application/grpc",
            );
            let span = server_span(&call).expect("a gRPC call is traced");
            assert_eq!(trace_id_of(&span).to_string(), TRACE);
            for untraced in [
                request("/grpc.health.v1.Health/Check", "application/grpc"),
                request(
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    "application/grpc",
                ),
                request("/metrics", "text/plain"),
            ] {
                assert!(server_span(&untraced).is_none(), "{}", untraced.uri());
            }
        });
    }
}
