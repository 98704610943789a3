//! Exchanges and queues import-svc declares at start, with their arguments (the same
//! topology ships as `deploy/rabbitmq/definitions.json`). The names, routing keys and
//! headers producers rely on are the contract in `proto::queue`.
//!
//! ```text
//! <p>import (direct) --import.job--> <p>import.jobs (quorum, delivery limit, DLX)
//!      ^                                 |  a dependency is down: republished (confirmed)
//!      |                                 v  to a delay tier, then acked
//!      |  TTL over: dead-lettered   <p>import.retry (direct) --<n>ms--> <p>import.retry.<n>ms
//!      +--- back with key import.job -------------------------------- (quorum, TTL n ms)
//!
//!   <p>import.jobs: rejected by us (x-rejection-reason) or over the delivery limit (broker)
//!                                        v
//!      <p>import.dlx (fanout) --> <p>import.jobs.dead (quorum): kept for operators
//!                             --> <p>import.dead.ledger (quorum): import-svc records every
//!                                 dead letter on its job (status, audit event, job event)
//! <p>import.events (topic): job.started / job.progress / job.completed / job.failed / ...
//! ```

use std::collections::BTreeMap;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use proto::queue::{JOB_ROUTING_KEY, Names, retry_routing_key};

use crate::config::AmqpConfig;

/// What import-svc declares: the names for one prefix (tests use a unique prefix each) and
/// the configured delay tiers.
#[derive(Debug, Clone)]
pub struct Topology {
    pub names: Names,
    /// The retry backoff in milliseconds (`amqp.retry_delays_ms`), shortest first.
    pub retry_delays_ms: Vec<u64>,
    /// The tier deferred jobs wait in (`amqp.defer_delay_ms`), and the one they wait in
    /// when deferred again (`amqp.max_defer_delay_ms`).
    pub defer_delay_ms: u64,
    pub max_defer_delay_ms: u64,
    /// Every delay tier declared: the retry delays and the deferral delay.
    pub delay_tiers_ms: Vec<u64>,
}

/// The exchange types in use, named as RabbitMQ (and `definitions.json`) names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
}

impl ExchangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
        }
    }

    fn kind(self) -> ExchangeKind {
        match self {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
        }
    }
}

/// One exchange as declared (never auto-deleted, never internal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeType,
    pub durable: bool,
}

/// A queue argument's value: the only two AMQP types the topology uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueArgument {
    Text(String),
    Int(i32),
}

impl QueueArgument {
    fn text(value: &str) -> Self {
        QueueArgument::Text(value.to_owned())
    }

    fn to_amqp(&self) -> AMQPValue {
        match self {
            QueueArgument::Text(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            QueueArgument::Int(int) => AMQPValue::LongInt(*int),
        }
    }
}

/// One queue as declared (never auto-deleted, never exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    /// `x-...` arguments, by name.
    pub arguments: BTreeMap<&'static str, QueueArgument>,
}

impl QueueSpec {
    fn field_table(&self) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in &self.arguments {
            table.insert((*name).into(), value.to_amqp());
        }
        table
    }
}

/// A queue bound to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

impl Topology {
    /// The names for `prefix`, with the default delay tiers.
    pub fn new(prefix: &str) -> Self {
        Topology::of(&AmqpConfig {
            prefix: prefix.to_owned(),
            ..AmqpConfig::default()
        })
    }

    /// The names and delay tiers `amqp` configures.
    pub fn of(amqp: &AmqpConfig) -> Self {
        let mut retry_delays_ms = amqp.retry_delays_ms.clone();
        retry_delays_ms.sort_unstable();
        retry_delays_ms.dedup();
        Topology {
            names: Names::with_prefix(&amqp.prefix),
            retry_delays_ms,
            defer_delay_ms: amqp.defer_delay_ms,
            max_defer_delay_ms: amqp.max_defer_delay_ms,
            delay_tiers_ms: amqp.delay_tiers_ms(),
        }
    }

    /// Every queue, for tests that clean up after themselves.
    pub fn all_queues(&self) -> Vec<String> {
        self.names.all_queues(&self.delay_tiers_ms)
    }

    /// Every exchange, for tests that clean up after themselves.
    pub fn all_exchanges(&self) -> Vec<String> {
        self.names.all_exchanges()
    }

    /// The exchanges [`Topology::declare`] declares. Durable: the topology survives a
    /// broker restart.
    pub fn exchanges(&self) -> Vec<ExchangeSpec> {
        let names = &self.names;
        let durable = |name: &str, kind| ExchangeSpec {
            name: name.to_owned(),
            kind,
            durable: true,
        };
        vec![
            durable(&names.jobs_exchange, ExchangeType::Direct),
            // Fanout: every dead letter lands in the one dead-letter queue whatever its key.
            durable(&names.dead_letter_exchange, ExchangeType::Fanout),
            // Direct: one routing key per delay tier.
            durable(&names.retry_exchange, ExchangeType::Direct),
            // Topic: downstream teams bind to the events they care about (job.completed,
            // job.*).
            durable(&names.events_exchange, ExchangeType::Topic),
        ]
    }

    /// The queues [`Topology::declare`] declares, for a given `amqp.delivery_limit`.
    pub fn queues(&self, delivery_limit: u32) -> Vec<QueueSpec> {
        let names = &self.names;
        let mut jobs_args = quorum();
        // A message that keeps killing its consumer is dead-lettered instead of looping.
        jobs_args.insert(
            "x-delivery-limit",
            QueueArgument::Int(i32::try_from(delivery_limit).unwrap_or(i32::MAX)),
        );
        jobs_args.insert(
            "x-dead-letter-exchange",
            QueueArgument::text(&names.dead_letter_exchange),
        );
        // At-least-once dead-lettering: the broker keeps a dead letter until the DLQ has it
        // (needs reject-publish overflow), so nothing is lost on the way.
        jobs_args.insert(
            "x-dead-letter-strategy",
            QueueArgument::text("at-least-once"),
        );
        jobs_args.insert("x-overflow", QueueArgument::text("reject-publish"));
        let mut queues = vec![
            QueueSpec {
                name: names.jobs_queue.clone(),
                durable: true,
                arguments: jobs_args,
            },
            QueueSpec {
                name: names.dead_letter_queue.clone(),
                durable: true,
                arguments: quorum(),
            },
            QueueSpec {
                name: names.dead_letter_ledger.clone(),
                durable: true,
                arguments: quorum(),
            },
        ];
        for delay_ms in &self.delay_tiers_ms {
            let mut args = quorum();
            // The whole tier waits the same time, so expiry at the head is expiry in order.
            args.insert(
                "x-message-ttl",
                QueueArgument::Int(i32::try_from(*delay_ms).unwrap_or(i32::MAX)),
            );
            // Expired: back to the jobs queue, the same way a producer's message arrives.
            args.insert(
                "x-dead-letter-exchange",
                QueueArgument::text(&names.jobs_exchange),
            );
            args.insert(
                "x-dead-letter-routing-key",
                QueueArgument::text(JOB_ROUTING_KEY),
            );
            args.insert(
                "x-dead-letter-strategy",
                QueueArgument::text("at-least-once"),
            );
            args.insert("x-overflow", QueueArgument::text("reject-publish"));
            queues.push(QueueSpec {
                name: names.retry_queue(*delay_ms),
                durable: true,
                arguments: args,
            });
        }
        queues
    }

    /// The bindings [`Topology::declare`] makes.
    pub fn bindings(&self) -> Vec<BindingSpec> {
        let names = &self.names;
        let mut bindings = vec![
            BindingSpec {
                exchange: names.jobs_exchange.clone(),
                queue: names.jobs_queue.clone(),
                routing_key: JOB_ROUTING_KEY.to_owned(),
            },
            // The key is irrelevant on a fanout exchange.
            BindingSpec {
                exchange: names.dead_letter_exchange.clone(),
                queue: names.dead_letter_queue.clone(),
                routing_key: String::new(),
            },
            BindingSpec {
                exchange: names.dead_letter_exchange.clone(),
                queue: names.dead_letter_ledger.clone(),
                routing_key: String::new(),
            },
        ];
        bindings.extend(self.delay_tiers_ms.iter().map(|delay_ms| BindingSpec {
            exchange: names.retry_exchange.clone(),
            queue: names.retry_queue(*delay_ms),
            routing_key: retry_routing_key(*delay_ms),
        }));
        bindings
    }

    /// Declares everything; idempotent, so every replica does it at start.
    pub async fn declare(&self, channel: &Channel, delivery_limit: u32) -> lapin::Result<()> {
        for exchange in self.exchanges() {
            let options = ExchangeDeclareOptions {
                durable: exchange.durable,
                ..Default::default()
            };
            channel
                .exchange_declare(
                    exchange.name.as_str().into(),
                    exchange.kind.kind(),
                    options,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in self.queues(delivery_limit) {
            let options = QueueDeclareOptions {
                durable: queue.durable,
                ..Default::default()
            };
            channel
                .queue_declare(queue.name.as_str().into(), options, queue.field_table())
                .await?;
        }
        for binding in self.bindings() {
            channel
                .queue_bind(
                    binding.queue.as_str().into(),
                    binding.exchange.as_str().into(),
                    binding.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Quorum queues: replicated, and they count deliveries (for the delivery limit).
fn quorum() -> BTreeMap<&'static str, QueueArgument> {
    BTreeMap::from([("x-queue-type", QueueArgument::text("quorum"))])
}

#[cfg(test)]
mod tests {
    //! `deploy/rabbitmq/definitions.json` is loaded into clusters ahead of the service; the
    //! broker refuses a redeclaration with different arguments, so the two must agree.
    use serde_json::{Value, json};

    use super::*;

    const DEFINITIONS: &str = include_str!("../../../deploy/rabbitmq/definitions.json");

    /// The file describes the topology as declared with the default config.
    fn declared() -> (Topology, u32) {
        let amqp = AmqpConfig::default();
        (Topology::of(&amqp), amqp.delivery_limit)
    }

    fn definitions() -> Value {
        serde_json::from_str(DEFINITIONS).expect("definitions.json is JSON")
    }

    fn section<'a>(definitions: &'a Value, name: &str) -> &'a Vec<Value> {
        definitions[name]
            .as_array()
            .unwrap_or_else(|| panic!("definitions.json has no {name} array"))
    }

    /// Entries keyed by their `name`, so the comparison ignores order in the file.
    fn by_name(entries: impl Iterator<Item = Value>) -> BTreeMap<String, Value> {
        keyed(entries, |entry| entry["name"].to_string())
    }

    fn keyed(
        entries: impl Iterator<Item = Value>,
        key: impl Fn(&Value) -> String,
    ) -> BTreeMap<String, Value> {
        let mut map = BTreeMap::new();
        for entry in entries {
            let previous = map.insert(key(&entry), entry);
            assert!(previous.is_none(), "listed twice: {previous:?}");
        }
        map
    }

    fn argument_json(value: &QueueArgument) -> Value {
        match value {
            QueueArgument::Text(text) => json!(text),
            QueueArgument::Int(int) => json!(int),
        }
    }

    #[test]
    fn the_shipped_exchanges_are_the_declared_ones() {
        let (topology, _) = declared();
        let expected = topology.exchanges().into_iter().map(|e| {
            json!({
                "name": e.name, "vhost": "/", "type": e.kind.as_str(), "durable": e.durable,
                "auto_delete": false, "internal": false, "arguments": {},
            })
        });
        assert_eq!(
            by_name(section(&definitions(), "exchanges").iter().cloned()),
            by_name(expected)
        );
    }

    #[test]
    fn the_shipped_queues_are_the_declared_ones_with_the_same_arguments() {
        let (topology, delivery_limit) = declared();
        let expected = topology.queues(delivery_limit).into_iter().map(|q| {
            let arguments: serde_json::Map<String, Value> = q
                .arguments
                .iter()
                .map(|(name, value)| ((*name).to_owned(), argument_json(value)))
                .collect();
            json!({
                "name": q.name, "vhost": "/", "durable": q.durable, "auto_delete": false,
                "arguments": arguments,
            })
        });
        assert_eq!(
            by_name(section(&definitions(), "queues").iter().cloned()),
            by_name(expected)
        );
    }

    #[test]
    fn the_shipped_bindings_are_the_declared_ones() {
        let (topology, _) = declared();
        let expected = topology.bindings().into_iter().map(|b| {
            json!({
                "source": b.exchange, "vhost": "/", "destination": b.queue,
                "destination_type": "queue", "routing_key": b.routing_key, "arguments": {},
            })
        });
        let route = |b: &Value| format!("{} -> {}", b["source"], b["destination"]);
        assert_eq!(
            keyed(section(&definitions(), "bindings").iter().cloned(), route),
            keyed(expected, route)
        );
    }

    #[test]
    fn every_declared_name_is_one_of_the_contract() {
        let (topology, delivery_limit) = declared();
        let exchanges: Vec<String> = topology.exchanges().into_iter().map(|e| e.name).collect();
        assert_eq!(exchanges, topology.names.all_exchanges());
        let queues: Vec<String> = topology
            .queues(delivery_limit)
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(queues, topology.names.all_queues(&topology.delay_tiers_ms));
    }

    #[test]
    fn the_shipped_definitions_are_for_the_default_vhost_only() {
        let definitions = definitions();
        assert_eq!(section(&definitions, "vhosts"), &vec![json!({"name": "/"})]);
        let url = url::Url::parse(secrecy::ExposeSecret::expose_secret(
            &AmqpConfig::default().url,
        ))
        .unwrap();
        assert_eq!(url.path(), "/%2f", "the default config uses the / vhost");
    }
}
