//! audit-svc's part of a distributed trace: one `audit.record` span per recorded event,
//! a child of the work that produced the event.
//!
//! Events reach `Record` in batches from the producers' outbox relays, long after and far
//! from the work they record, so the call's own span belongs to the relay's trace. The
//! relay sends each event's `traceparent` beside it (`RecordRequest.trace_parents`, by event
//! id); the event's span takes that as its parent and links to the call. Events sent
//! without one get no span of their own: the call's span covers them.

use std::collections::HashMap;

use service_runtime::trace_context;
use tracing::Span;

use crate::event::EventBody;

/// The spans of the traced events among `bodies`, open until dropped: create them before
/// the batch is appended and drop them once it is committed (or refused).
pub(crate) struct RecordSpans(Vec<Span>);

impl RecordSpans {
    /// Opens a span for every event of `bodies` whose id has a valid entry in
    /// `trace_parents`.
    pub(crate) fn open(trace_parents: &HashMap<String, String>, bodies: &[EventBody]) -> Self {
        if trace_parents.is_empty() {
            return RecordSpans(Vec::new());
        }
        let call = Span::current();
        let spans = bodies
            .iter()
            .filter_map(|body| {
                let traceparent = trace_parents.get(&body.event_id.to_string())?;
                let span = tracing::info_span!(
                    "audit.record",
                    event_id = %body.event_id,
                    kind = %body.kind,
                    tenant = %body.tenant,
                    otel.status_code = tracing::field::Empty,
                );
                if !trace_context::set_parent_from_traceparent(&span, traceparent) {
                    return None;
                }
                trace_context::link_to(&span, &call);
                Some(span)
            })
            .collect();
        RecordSpans(spans)
    }

    /// Marks every span failed: the batch was not recorded.
    pub(crate) fn failed(&self) {
        for span in &self.0 {
            span.record("otel.status_code", "error");
        }
    }
}
