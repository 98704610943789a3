//! RabbitMQ: the queue topology ([`topology`]), confirmed publishing ([`publisher`]), the
//! job consumer with its reconnect loop ([`consumer`]) and the order it starts jobs in
//! ([`scheduler`]), and the trace context on messages
//! ([`trace_headers`]).

pub mod consumer;
pub mod ledger;
pub mod publisher;
pub mod reconciler;
pub mod retry;
pub mod scheduler;
pub mod topology;
pub(crate) mod trace_headers;
