//! RabbitMQ: the queue topology ([`topology`]), confirmed publishing ([`publisher`]), the
//! job consumer with its reconnect loop ([`consumer`]) and the trace context on messages
//! ([`trace_headers`]).

pub mod consumer;
pub mod ledger;
pub mod publisher;
pub mod reconciler;
pub mod retry;
pub mod topology;
pub(crate) mod trace_headers;
