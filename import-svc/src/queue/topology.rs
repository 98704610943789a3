//! Exchanges and queues import-svc declares at start (the same topology ships as
//! `deploy/rabbitmq/definitions.json`).
//!
//! ```text
//! <p>import (direct) --import.job--> <p>import.jobs (quorum, delivery limit, DLX)
//!                                        | rejected by us (with x-rejection-reason) or
//!                                        | over the delivery limit (broker)
//!                                        v
//!                               <p>import.dlx (fanout) --> <p>import.jobs.dead (quorum)
//! <p>import.events (topic): job.started / job.progress / job.completed / job.failed / ...
//! ```

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// Routing key of job messages on the jobs exchange.
pub const JOB_ROUTING_KEY: &str = "import.job";

/// The names, all prefixed (tests use a unique prefix each).
#[derive(Debug, Clone)]
pub struct Topology {
    pub jobs_exchange: String,
    pub jobs_queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub events_exchange: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Topology {
            jobs_exchange: format!("{prefix}import"),
            jobs_queue: format!("{prefix}import.jobs"),
            dead_letter_exchange: format!("{prefix}import.dlx"),
            dead_letter_queue: format!("{prefix}import.jobs.dead"),
            events_exchange: format!("{prefix}import.events"),
        }
    }

    /// Declares everything; idempotent, so every replica does it at start.
    pub async fn declare(&self, channel: &Channel, delivery_limit: u32) -> lapin::Result<()> {
        // Durable: the topology survives a broker restart.
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.jobs_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        // Fanout: every dead letter lands in the one dead-letter queue whatever its key.
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        // Topic: downstream teams bind to the events they care about (job.completed, job.*).
        channel
            .exchange_declare(
                self.events_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;

        let queue_options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut jobs_args = quorum();
        // A message that keeps killing its consumer is dead-lettered instead of looping.
        jobs_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(delivery_limit).unwrap_or(i32::MAX)),
        );
        jobs_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange.as_str())),
        );
        // At-least-once dead-lettering: the broker keeps a dead letter until the DLQ has it
        // (needs reject-publish overflow), so nothing is lost on the way.
        jobs_args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString(LongString::from("at-least-once")),
        );
        jobs_args.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from("reject-publish")),
        );
        channel
            .queue_declare(self.jobs_queue.as_str().into(), queue_options, jobs_args)
            .await?;
        channel
            .queue_bind(
                self.jobs_queue.as_str().into(),
                self.jobs_exchange.as_str().into(),
                JOB_ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .queue_declare(
                self.dead_letter_queue.as_str().into(),
                queue_options,
                quorum(),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// Quorum queues: replicated, and they count deliveries (for the delivery limit).
fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}
