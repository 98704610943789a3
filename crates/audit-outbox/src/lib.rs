//! The transactional outbox through which a service sends its [`AuditEvent`]s to audit-svc.
//!
//! A producer includes [`SCHEMA_SQL`] in its own migrations, calls [`enqueue`] inside the
//! transaction that makes the change being recorded (so the event exists exactly when the
//! change does, even if audit-svc is down), and runs one [`Relay`] (from the
//! [`OutboxConfig`] under its config's `[audit]` key) that delivers pending
//! events in order, in batches, through audit-svc's `Record` RPC, retrying with capped
//! backoff until they are accepted. audit-svc is idempotent by `event_id`, so delivering
//! a batch twice (after a crash between `Record` and marking it delivered) is harmless.
//!
//! Producers never wedge: [`enqueue`] fits every event to audit-svc's limits (the shared
//! `proto::audit_limits`) before storing it, batches are capped in bytes as well as
//! events, and an event audit-svc still refuses as invalid is moved to the quarantine
//! ([`QUARANTINE_SQL`]) so the events behind it are delivered. Only transient failures
//! are retried. The backlog, its oldest event's age, the quarantine and deliveries are in
//! `/metrics` ([`Relay::with_metrics`]); the counts also at [`HEALTH_PATH`].
//!
//! Each row also keeps the W3C `traceparent` of the work that enqueued it
//! ([`TRACE_CONTEXT_SQL`]); the relay sends it beside the event (`RecordRequest.trace_parents`)
//! and audit-svc records the event in a span under it, so an import's trace reaches
//! audit-svc although delivery happens later, in batches, on another task.
//!
//! [`AuditEvent`]: proto::common::v1::AuditEvent

mod config;
mod denials;
mod fit;
mod health;
mod metrics;
mod outbox;
mod record_call;
mod relay;

pub use config::OutboxConfig;
pub use denials::{OutboxDenials, denial_event};
pub use fit::{FITTED_KEY, digest_id, fit_text, fit_to_limits};
pub use health::{HEALTH_PATH, OutboxHealth, health, health_router};
pub use outbox::{OutboxError, enqueue, pending_count};
pub use relay::{Delivery, MAX_BATCH, Relay, RelayConfig, RelayError, Waker, quarantined_count};

/// The outbox table. A producer copies it, unchanged, into a migration of its own.
pub const SCHEMA_SQL: &str = include_str!("../sql/audit_outbox.sql");

/// The quarantine of events audit-svc refused as invalid. A producer copies it, unchanged,
/// into a migration of its own after [`SCHEMA_SQL`].
pub const QUARANTINE_SQL: &str = include_str!("../sql/audit_outbox_quarantine.sql");

/// The outbox's `traceparent` column: each event goes to audit-svc with the trace context
/// of the work that enqueued it, so audit-svc's span of it joins that trace. A producer
/// copies it, unchanged, into a migration of its own after [`QUARANTINE_SQL`].
pub const TRACE_CONTEXT_SQL: &str = include_str!("../sql/audit_outbox_trace_context.sql");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_producer_migrates_the_quarantine_unchanged() {
        assert_eq!(
            include_str!("../../../auth-svc/migrations/0006_audit_outbox_quarantine.sql"),
            QUARANTINE_SQL
        );
        assert_eq!(
            include_str!("../../../import-svc/migrations/0010_audit_outbox_quarantine.sql"),
            QUARANTINE_SQL
        );
    }

    #[test]
    fn every_producer_migrates_the_trace_context_unchanged() {
        assert_eq!(
            include_str!("../../../auth-svc/migrations/0010_audit_outbox_trace_context.sql"),
            TRACE_CONTEXT_SQL
        );
        assert_eq!(
            include_str!("../../../import-svc/migrations/0011_audit_outbox_trace_context.sql"),
            TRACE_CONTEXT_SQL
        );
    }
}
