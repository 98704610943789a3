//! Billing suggestions (the seed's RevenueRescue workflow): unbilled time found in a
//! connection's Clio calendar, shown to a person, and written to Clio as a time entry only
//! after that person approves it.
//!
//! - [`rules`]: which calendar entries hold unbilled time, and the time entry each becomes.
//! - [`detect`]: reading a calendar range from Clio (dropped as it is read) into pending
//!   suggestions, skipping entries already billed in Clio or already suggested.
//! - [`store`]: the `suggestions` table; a suggestion keeps only what its time entry needs.
//! - [`access`]: whose suggestions a caller may see and decide on.
//! - [`events`]: the audit events of decisions and writes.
//! - [`write`]: the exactly-once write of an approved suggestion, and cancellation of what
//!   a revoked connection leaves open.
//! - [`clio`]: the Clio calls, through each connection's rate gate.
//! - [`api`]: the `SuggestionService` handlers.
//!
//! It lives in import-svc because everything it needs is here already: leases from
//! auth-svc, the Clio list reader and each connection's rate gate (shared with that
//! connection's import jobs, so detection and imports together stay within Clio's limit),
//! the audit outbox, and the calendar retention rules.

pub mod access;
pub mod api;
pub mod clio;
pub mod detect;
pub mod events;
pub mod rules;
pub mod store;
pub mod write;
