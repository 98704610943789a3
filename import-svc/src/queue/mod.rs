//! RabbitMQ: the queue topology ([`topology`]), confirmed publishing ([`publisher`]) and the
//! job consumer with its reconnect loop ([`consumer`]).

pub mod consumer;
pub mod ledger;
pub mod publisher;
pub mod reconciler;
pub mod retry;
pub mod topology;
