//! Publishing with publisher confirms: a publish returns only once the broker has the
//! message (routed and stored), or fails — also when no confirm comes in time, so a broker
//! that stops answering never holds a job (or an RPC) for ever.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0:?}")]
    Unroutable(String),
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker did not confirm the message within {0:?}")]
    ConfirmTimeout(Duration),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// Persistent (survives a broker restart once confirmed).
const PERSISTENT: u8 = 2;

/// A message to publish.
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub message_id: Option<&'a str>,
    pub headers: FieldTable,
    /// Unroutable is an error (jobs, dead letters); events may go unheard.
    pub mandatory: bool,
}

/// A confirm-mode channel, replaced when the connection is.
pub struct Publisher {
    channel: Mutex<Option<Channel>>,
    /// For passive declares (queue depths), never for publishing.
    probe: Mutex<Option<Channel>>,
    confirm_timeout: Duration,
}

impl Publisher {
    pub fn new(confirm_timeout: Duration) -> Self {
        Publisher {
            channel: Mutex::new(None),
            probe: Mutex::new(None),
            confirm_timeout,
        }
    }

    /// Opens a fresh confirm channel on `connection` (after every reconnect).
    pub async fn attach(&self, connection: &Connection) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *self.channel.lock().await = Some(channel);
        *self.probe.lock().await = Some(connection.create_channel().await?);
        Ok(())
    }

    pub async fn detach(&self) {
        *self.channel.lock().await = None;
        *self.probe.lock().await = None;
    }

    pub async fn publish(&self, message: Outgoing<'_>) -> Result<(), PublishError> {
        let channel = self
            .channel
            .lock()
            .await
            .clone()
            .ok_or(PublishError::NotConnected)?;
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(message.content_type.into())
            .with_headers(message.headers);
        if let Some(id) = message.message_id {
            properties = properties.with_message_id(id.into());
        }
        let publish = async {
            channel
                .basic_publish(
                    message.exchange.into(),
                    message.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: message.mandatory,
                        ..Default::default()
                    },
                    message.body,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.confirm_timeout))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => {
                Err(PublishError::Unroutable(message.routing_key.to_owned()))
            }
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // confirm_select was called on this channel, so this means it was replaced.
            Confirmation::NotRequested => Err(PublishError::NotConnected),
        }
    }
}

impl Publisher {
    /// Messages ready (not delivered) in `queue`, by a passive declare on the probe
    /// channel (kept apart: a failed passive declare closes the channel it ran on).
    pub async fn ready_count(&self, queue: &str) -> Result<u32, PublishError> {
        let probe = self
            .probe
            .lock()
            .await
            .clone()
            .ok_or(PublishError::NotConnected)?;
        let declared = probe
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(declared.message_count())
    }
}
