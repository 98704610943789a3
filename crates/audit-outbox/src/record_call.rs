//! One `Record` call as the relay makes it: the events, the trace context each one was
//! enqueued under (`RecordRequest.trace_parents`), and the relay's span of the call.
//!
//! A batch mixes events of many traces (jobs, RPCs), so the call cannot be a child of all
//! of them: its span starts a trace of its own and *links* to each event's context, while
//! audit-svc makes each event's span a child of that event's context.

use proto::audit::v1::RecordRequest;
use proto::common::v1::AuditEvent;
use service_runtime::trace_context;
use tracing::Span;

/// What one event's trace context adds to an encoded `RecordRequest`: a map entry holding
/// the event id and the `traceparent`, with their tags and lengths.
pub(crate) fn trace_entry_bytes(event: &AuditEvent, traceparent: Option<&str>) -> usize {
    traceparent.map_or(0, |value| event.event_id.len() + value.len() + 8)
}

/// The request carrying `rows` (an event and the `traceparent` it was enqueued under, if
/// any) and the span to make the call in.
pub(crate) fn request<'a>(
    rows: impl ExactSizeIterator<Item = (&'a AuditEvent, Option<&'a str>)>,
) -> (RecordRequest, Span) {
    let span = tracing::info_span!(
        "audit_outbox.deliver",
        otel.kind = "client",
        events = rows.len()
    );
    let mut request = RecordRequest::default();
    for (event, traceparent) in rows {
        if let Some(traceparent) = traceparent {
            trace_context::link_traceparent(&span, traceparent);
            request
                .trace_parents
                .insert(event.event_id.clone(), traceparent.to_owned());
        }
        request.events.push(event.clone());
    }
    (request, span)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_traced_event_carries_its_traceparent_by_event_id() {
        let traced = AuditEvent {
            event_id: "0190a0b1-0000-7000-8000-000000000001".into(),
            ..Default::default()
        };
        let untraced = AuditEvent {
            event_id: "0190a0b1-0000-7000-8000-000000000002".into(),
            ..Default::default()
        };
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (request, _span) = request([(&traced, Some(parent)), (&untraced, None)].into_iter());
        assert_eq!(request.events, vec![traced.clone(), untraced]);
        assert_eq!(request.trace_parents.len(), 1);
        assert_eq!(request.trace_parents[&traced.event_id], parent);
        // The estimate covers the entry as encoded.
        let alone = RecordRequest {
            trace_parents: request.trace_parents.clone(),
            ..Default::default()
        };
        assert!(prost::Message::encoded_len(&alone) <= trace_entry_bytes(&traced, Some(parent)));
    }
}
