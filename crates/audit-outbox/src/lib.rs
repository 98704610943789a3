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
//! [`AuditEvent`]: proto::common::v1::AuditEvent

mod config;
mod denials;
mod outbox;
mod relay;

pub use config::OutboxConfig;
pub use denials::{OutboxDenials, denial_event};
pub use outbox::{OutboxError, enqueue, pending_count};
pub use relay::{Delivery, MAX_BATCH, Relay, RelayConfig, RelayError, Waker};

/// The outbox table. A producer copies it, unchanged, into a migration of its own.
pub const SCHEMA_SQL: &str = include_str!("../sql/audit_outbox.sql");
