//! The W3C trace context on job messages and job events
//! ([`proto::queue::header::TRACEPARENT`], [`proto::queue::header::TRACESTATE`]): a job runs in a span under the trace of whoever published it,
//! `SubmitJob` passes its caller's trace on, and readers of job events can join the job's.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use service_runtime::trace_context::{self, Extractor, Injector};
use tracing::Span;

/// Message headers being written, as a carrier.
struct Writing<'a>(&'a mut FieldTable);

impl Injector for Writing<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

/// Delivered message headers, as a carrier. Producers send strings as long (`S`) or short
/// (`s`) strings depending on their client; both are read.
struct Reading<'a>(&'a FieldTable);

impl Extractor for Reading<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|key| key.as_str()).collect()
    }
}

/// Headers holding the current span's trace context (none when it is not traced).
pub(crate) fn current() -> FieldTable {
    let mut headers = FieldTable::default();
    trace_context::inject_current(&mut Writing(&mut headers));
    headers
}

/// The span `delivery`'s job runs in: a child of the producer's trace context when the
/// message carries one, else the root of a new trace.
pub(crate) fn job_span(delivery: &Delivery) -> Span {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "import.job",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %delivery.exchange,
        messaging.message.id = %message_id,
        redelivered = delivery.redelivered,
    );
    if let Some(headers) = delivery.properties.headers() {
        trace_context::set_remote_parent(&span, &Reading(headers));
    }
    span
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lapin::types::ShortString;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use proto::queue::header;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn with_tracing(run: impl FnOnce()) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, run);
    }

    fn trace_id(span: &Span) -> String {
        span.context().span().span_context().trace_id().to_string()
    }

    #[test]
    fn a_published_context_is_the_parent_of_the_consumed_job() {
        with_tracing(|| {
            let producer = tracing::info_span!("submit");
            let headers = producer.in_scope(current);
            assert!(matches!(
                headers.inner().get(header::TRACEPARENT),
                Some(AMQPValue::LongString(_))
            ));
            let job = tracing::info_span!(parent: None, "job");
            assert!(trace_context::set_remote_parent(&job, &Reading(&headers)));
            assert_eq!(trace_id(&job), trace_id(&producer));
        });
    }

    #[test]
    fn another_producer_s_short_string_header_is_read() {
        with_tracing(|| {
            let mut headers = FieldTable::default();
            headers.insert(
                header::TRACEPARENT.into(),
                AMQPValue::ShortString(ShortString::from(format!(
                    "00-{TRACE}-00f067aa0ba902b7-01"
                ))),
            );
            let job = tracing::info_span!("job");
            assert!(trace_context::set_remote_parent(&job, &Reading(&headers)));
            assert_eq!(trace_id(&job), TRACE);
        });
    }

    #[test]
    fn an_untraced_publisher_adds_no_header() {
        assert!(current().inner().is_empty());
    }
}
