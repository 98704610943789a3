//! The dead-letter ledger: what a dead letter import-svc did not make itself says about
//! its job.
//!
//! The dead-letter exchange fans every dead letter out to two queues: the dead-letter queue
//! operators inspect, and this ledger, which import-svc consumes. A message import-svc
//! rejected itself carries `x-rejected-by` and was recorded when it was rejected; anything
//! else was dead-lettered by the broker (delivery limit, message TTL, a length limit, a
//! policy), and its reason is read from the broker's `x-death` history.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use proto::queue::header;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::JobContext;
use crate::job::{body, spec};

/// A dead letter to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub job_id: Option<Uuid>,
    pub connection_id: String,
    pub requested_by: String,
    pub message_id: Option<String>,
    pub reason: String,
}

impl DeadLetter {
    /// The event context when the job is not stored (it never reached a consumer).
    pub fn context(&self) -> JobContext {
        JobContext::of_rejected_message(
            self.job_id,
            &self.connection_id,
            &self.requested_by,
            self.message_id.as_deref(),
        )
    }

    pub fn payload(&self) -> Value {
        json!({ "message_id": self.message_id, "dead_lettered_by": "broker" })
    }
}

/// What the message says, or `None` when import-svc dead-lettered it itself.
pub fn describe(delivery: &Delivery) -> Option<DeadLetter> {
    let headers = delivery.properties.headers().as_ref();
    if header_text(headers, header::REJECTED_BY).as_deref() == Some(header::IMPORT_SVC) {
        return None;
    }
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned());
    // The body is read only for the job it names; a body that names none is still recorded.
    let wire = body::decode(&delivery.data, content_type.as_deref()).ok();
    let job_id = wire
        .as_ref()
        .and_then(|w| Uuid::parse_str(w.job_id.trim()).ok());
    // Whatever a producer put there, stored and audited only in a printable, bounded form.
    let text = |pick: fn(&proto::imports::v1::ImportJob) -> &str| {
        wire.as_ref()
            .map(|w| spec::printable(pick(w).trim(), 128))
            .unwrap_or_default()
    };
    Some(DeadLetter {
        job_id,
        connection_id: text(|w| &w.connection_id),
        requested_by: text(|w| &w.requested_by),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| spec::printable(m.as_str(), 128)),
        reason: reason(headers),
    })
}

/// The broker's reason, from the newest `x-death` entry (RabbitMQ puts it first).
fn reason(headers: Option<&FieldTable>) -> String {
    let newest = headers
        .and_then(|h| h.inner().get(header::X_DEATH))
        .and_then(|v| match v {
            AMQPValue::FieldArray(entries) => entries.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|entry| match entry {
            AMQPValue::FieldTable(table) => Some(table),
            _ => None,
        });
    let Some(entry) = newest else {
        return "dead-lettered by the broker without an x-death record".into();
    };
    let why = header_text(Some(&entry), header::X_DEATH_REASON)
        .map_or_else(|| "unknown".into(), |t| spec::printable(&t, 64));
    let queue = header_text(Some(&entry), header::X_DEATH_QUEUE)
        .map_or_else(|| "unknown".into(), |t| spec::printable(&t, 255));
    let meaning = match why.as_str() {
        "delivery_limit" => {
            "the delivery limit was reached: the message was handed back too many times \
             (a consumer crashing on it)"
        }
        "expired" => "its time to live ran out before a consumer took it",
        "maxlen" => "the queue's length limit was reached",
        "rejected" => "a consumer rejected it",
        _ => "the broker gave no further reason",
    };
    format!("dead-lettered by the broker from queue {queue} ({why}): {meaning}")
}

fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, LongString};

    use super::*;

    fn death(reason: &str, queue: &str) -> AMQPValue {
        let mut entry = FieldTable::default();
        entry.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        entry.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from(queue)),
        );
        AMQPValue::FieldTable(entry)
    }

    #[test]
    fn the_newest_death_names_the_reason() {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("delivery_limit", "import.jobs"),
                death("expired", "import.retry.1000ms"),
            ])),
        );
        let reason = reason(Some(&headers));
        assert!(reason.contains("import.jobs (delivery_limit)"), "{reason}");
        assert!(reason.contains("delivery limit was reached"), "{reason}");
    }

    #[test]
    fn a_dead_letter_without_history_still_has_a_reason() {
        assert!(reason(None).contains("without an x-death record"));
    }
}
