//! RabbitMQ for tests: publish raw messages, read queues, and delete everything a test
//! declared (by its unique prefix) when it ends.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::poll_until;

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct AmqpMessage {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub content_type: Option<String>,
}

impl AmqpMessage {
    /// A string header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.headers.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// A broker connection for one test. Queues and exchanges named with [`TestBroker::track`]
/// are deleted when it is dropped.
pub struct TestBroker {
    pub prefix: String,
    pub url: String,
    channel: Channel,
    _connection: Connection,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl TestBroker {
    pub async fn connect(test: &str) -> TestBroker {
        let url = crate::amqp_url();
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("cannot reach test RabbitMQ at {url}: {e}"));
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        TestBroker {
            prefix: format!("{}.", crate::unique_prefix(test)),
            url,
            channel,
            _connection: connection,
            queues: Vec::new(),
            exchanges: Vec::new(),
        }
    }

    /// Deletes these (prefixed) names at the end of the test.
    pub fn track(&mut self, queues: &[&str], exchanges: &[&str]) {
        self.queues.extend(queues.iter().map(|q| (*q).to_owned()));
        self.exchanges
            .extend(exchanges.iter().map(|e| (*e).to_owned()));
    }

    /// Binds a new queue to the durable topic exchange `exchange` with `pattern`, as a
    /// downstream consumer of published events would, and returns the queue's name (deleted
    /// at the end of the test). The exchange is declared too (idempotent), so binding does
    /// not race the service that owns it.
    pub async fn subscribe(&mut self, exchange: &str, pattern: &str) -> String {
        let queue = format!("{}subscriber.{}", self.prefix, self.queues.len());
        self.channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange.declare");
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue.declare");
        self.channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue.bind");
        self.queues.push(queue.clone());
        queue
    }

    /// How many messages on `queue` are ready for delivery (not those a consumer holds
    /// unacknowledged).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue.declare (passive)")
            .message_count()
    }

    /// Publishes a raw body (with a confirm) as a producer would.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(content_type) = content_type {
            properties = properties.with_content_type(content_type.into());
        }
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }

    /// Takes one message from `queue` and hands it back (`nack` with requeue), as a
    /// consumer that crashed on it would: on a quorum queue this counts toward its
    /// delivery limit. Returns whether there was a message.
    pub async fn bounce(&self, queue: &str) -> bool {
        let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
        else {
            return false;
        };
        message
            .delivery
            .acker
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("nack");
        true
    }

    /// Takes one message from `queue` if there is one.
    pub async fn get(&self, queue: &str) -> Option<AmqpMessage> {
        let message = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")?;
        let properties = &message.delivery.properties;
        Some(AmqpMessage {
            routing_key: message.delivery.routing_key.as_str().to_owned(),
            body: message.delivery.data.clone(),
            headers: properties.headers().clone().unwrap_or_default(),
            content_type: properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str().to_owned()),
        })
    }

    /// Waits (bounded) for a message on `queue`.
    pub async fn next_message(&self, queue: &str, deadline: Duration) -> AmqpMessage {
        poll_until(
            &format!("a message on {queue}"),
            deadline,
            Duration::from_millis(50),
            || self.get(queue),
        )
        .await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let url = self.url.clone();
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(connection) =
                    Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                for queue in &queues {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for exchange in &exchanges {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = channel
                            .exchange_delete(
                                exchange.as_str().into(),
                                ExchangeDeleteOptions::default(),
                            )
                            .await;
                    }
                }
                let _ = connection.close(200, "bye".into()).await;
            });
        });
        let _ = handle.join();
    }
}
