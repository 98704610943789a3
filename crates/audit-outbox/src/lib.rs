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
//! are retried. The counts are in `/metrics` ([`Relay::with_metrics`]) and at
//! [`HEALTH_PATH`].
//!
//! [`AuditEvent`]: proto::common::v1::AuditEvent

mod config;
mod denials;
mod fit;
mod health;
mod outbox;
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
}
