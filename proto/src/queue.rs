//! The job queue's contract on RabbitMQ: what a producer in any language needs to submit
//! import jobs, and what a reader of job events or dead letters finds on them.
//!
//! import-svc declares this topology at start (with its queue arguments, delivery limit and
//! retry tiers, in its `queue::topology`), `deploy/rabbitmq/definitions.json` ships the same
//! for clusters set up ahead of it, and `deploy/rabbitmq/README.md` says why each piece is
//! there. Every name starts with the deployment's prefix (import-svc's `amqp.prefix`: empty
//! by default, unique per test); [`Names::with_prefix`] gives them all.
//!
//! # Submitting a job
//!
//! Publish one `ImportJob` ([`crate::imports::v1::ImportJob`]) per message to
//! [`Names::jobs_exchange`] with routing key [`JOB_ROUTING_KEY`]: protobuf with content type
//! [`content_type::PROTOBUF`], or JSON in protobuf's canonical JSON mapping, either
//! field-name spelling (`connectionId` or `connection_id`), with [`content_type::JSON`]
//! (what `MessageToJson`, `protojson` or `JsonFormat` print; decoded by [`crate::json`]). Publish it persistent (delivery mode 2), `mandatory`, with
//! publisher confirms, and with the job id (a UUID) as `message_id`: a job id never runs
//! twice, so publishing again after a lost confirm is safe. A producer that traces its work
//! adds the W3C trace context as the string headers [`header::TRACEPARENT`] (and
//! [`header::TRACESTATE`]): import-svc runs the job in a span under it, so the job's spans
//! in every service join the producer's trace. Without them the job starts a trace of its
//! own; a malformed one is ignored, never a reason to refuse the job.
//!
//! # Reading what happened
//!
//! - **Job events**: a protobuf `JobEvent` ([`crate::imports::v1::JobEvent`]) per state
//!   change on the topic exchange [`Names::events_exchange`], routing keys in [`event_key`]
//!   (bind [`event_key::ALL`] for every one).
//! - **Dead letters**: [`Names::dead_letter_queue`] keeps every job message that did not
//!   run, body and content type unchanged. One import-svc refused carries the headers in
//!   [`header`] naming why ([`header::REJECTION_REASON`]); one the broker dead-lettered
//!   (delivery limit, TTL, a policy) carries the broker's own history, [`header::X_DEATH`].

/// Routing key of job messages on [`Names::jobs_exchange`].
pub const JOB_ROUTING_KEY: &str = "import.job";

/// Every exchange and queue name, for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Direct exchange producers publish jobs to ([`JOB_ROUTING_KEY`]).
    pub jobs_exchange: String,
    /// The quorum queue import-svc consumes jobs from.
    pub jobs_queue: String,
    /// Fanout exchange every dead letter goes through.
    pub dead_letter_exchange: String,
    /// Dead letters kept for operators.
    pub dead_letter_queue: String,
    /// The same dead letters, consumed by import-svc so each one ends its job visibly.
    pub dead_letter_ledger: String,
    /// Direct exchange of the delay tiers a job waits in while a dependency is down
    /// (routing key [`retry_routing_key`]).
    pub retry_exchange: String,
    /// Topic exchange of job events ([`event_key`]).
    pub events_exchange: String,
}

impl Names {
    /// The names under `prefix` (import-svc's `amqp.prefix`; empty by default).
    pub fn with_prefix(prefix: &str) -> Self {
        Names {
            jobs_exchange: format!("{prefix}import"),
            jobs_queue: format!("{prefix}import.jobs"),
            dead_letter_exchange: format!("{prefix}import.dlx"),
            dead_letter_queue: format!("{prefix}import.jobs.dead"),
            dead_letter_ledger: format!("{prefix}import.dead.ledger"),
            retry_exchange: format!("{prefix}import.retry"),
            events_exchange: format!("{prefix}import.events"),
        }
    }

    /// The queue of the delay tier that waits `delay_ms` (`<prefix>import.retry.<n>ms`).
    pub fn retry_queue(&self, delay_ms: u64) -> String {
        format!("{}.{}", self.retry_exchange, retry_routing_key(delay_ms))
    }

    /// Every exchange.
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![
            self.jobs_exchange.clone(),
            self.dead_letter_exchange.clone(),
            self.retry_exchange.clone(),
            self.events_exchange.clone(),
        ]
    }

    /// Every queue, with one delay tier per entry of `retry_delays_ms` (import-svc's
    /// `amqp.retry_delays_ms`).
    pub fn all_queues(&self, retry_delays_ms: &[u64]) -> Vec<String> {
        let mut queues = vec![
            self.jobs_queue.clone(),
            self.dead_letter_queue.clone(),
            self.dead_letter_ledger.clone(),
        ];
        queues.extend(retry_delays_ms.iter().map(|d| self.retry_queue(*d)));
        queues
    }
}

/// The routing key (on [`Names::retry_exchange`]) of the delay tier that waits `delay_ms`.
pub fn retry_routing_key(delay_ms: u64) -> String {
    format!("{delay_ms}ms")
}

/// Content types of a job message body.
pub mod content_type {
    /// The `ImportJob` in protobuf (what import-svc itself publishes).
    pub const PROTOBUF: &str = "application/x-protobuf";
    /// The `ImportJob` as JSON in protobuf's canonical JSON mapping, either field-name
    /// spelling (`updatedSince` or `updated_since`, as RFC 3339), `mode` by name
    /// (`"IMPORT_MODE_FULL"`) or number; unknown fields are refused ([`crate::json`]).
    pub const JSON: &str = "application/json";
    /// Also read as protobuf. A message with no content type is read as JSON when its body
    /// starts with `{`, else as protobuf; any other content type is dead-lettered.
    pub const PROTOBUF_ALIASES: [&str; 2] = ["application/protobuf", "application/octet-stream"];
}

/// Message headers import-svc sets, and the broker's that it reads.
pub mod header {
    /// The name import-svc puts in [`REJECTED_BY`] and [`REPUBLISHED_BY`].
    pub const IMPORT_SVC: &str = "import-svc";

    /// On a dead letter import-svc made: why (the field or cause), for people.
    pub const REJECTION_REASON: &str = "x-rejection-reason";
    /// On a dead letter import-svc made: [`IMPORT_SVC`]. A dead letter without it was made
    /// by the broker (see [`X_DEATH`]).
    pub const REJECTED_BY: &str = "x-rejected-by";
    /// On a dead letter import-svc made: the exchange the message had come through.
    pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
    /// On a dead letter import-svc made: the routing key the message had come with.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
    /// On a dead letter import-svc made, when the body named a readable job id: that id.
    pub const JOB_ID: &str = "x-job-id";

    /// On a job message import-svc's reconciler published again (its original was lost):
    /// [`IMPORT_SVC`].
    pub const REPUBLISHED_BY: &str = "x-republished-by";

    /// On a job message (any producer's; import-svc's own `SubmitJob` sets it) and on job
    /// events: the W3C trace context, `00-<trace id>-<parent span id>-<flags>`, as a
    /// string. Kept when import-svc parks or hands back a job, so every run of it stays in
    /// the producer's trace.
    pub const TRACEPARENT: &str = "traceparent";
    /// Beside [`TRACEPARENT`]: vendor-specific trace state (W3C), passed on unread.
    pub const TRACESTATE: &str = "tracestate";

    /// On a job waiting in a delay tier: retries already spent on the current outage.
    pub const RETRY_ATTEMPT: &str = "x-retry-attempt";
    /// On a job waiting in a delay tier: when the current outage was first met (Unix
    /// milliseconds).
    pub const RETRY_OUTAGE_STARTED_MS: &str = "x-retry-outage-started-ms";
    /// On a job waiting in a delay tier: when it was last parked (Unix milliseconds).
    pub const RETRY_LAST_MS: &str = "x-retry-last-ms";
    /// On a job waiting in a delay tier: why it could not run, for people.
    pub const RETRY_REASON: &str = "x-retry-reason";

    /// On a job parked until its connection's turn: how often it was parked so far. The
    /// first wait is import-svc's `amqp.defer_delay_ms`, every later one
    /// `amqp.max_defer_delay_ms`, so a long backlog does not cycle through the broker.
    pub const DEFERRALS: &str = "x-deferrals";

    /// RabbitMQ's dead-letter history: an array of tables, newest first, each with at
    /// least [`X_DEATH_REASON`] and [`X_DEATH_QUEUE`].
    pub const X_DEATH: &str = "x-death";
    /// In an [`X_DEATH`] entry: why the broker dead-lettered the message
    /// (`delivery_limit`, `expired`, `maxlen`, `rejected`).
    pub const X_DEATH_REASON: &str = "reason";
    /// In an [`X_DEATH`] entry: the queue the message was dead-lettered from.
    pub const X_DEATH_QUEUE: &str = "queue";
}

/// Routing keys of `JobEvent`s on [`Names::events_exchange`].
pub mod event_key {
    pub const JOB_STARTED: &str = "job.started";
    /// Pages committed: at most one event a quarter second per job, and always after a
    /// listing's last page.
    pub const JOB_PROGRESS: &str = "job.progress";
    pub const JOB_COMPLETED: &str = "job.completed";
    pub const JOB_FAILED: &str = "job.failed";
    pub const JOB_CANCELLED: &str = "job.cancelled";
    pub const JOB_DEAD_LETTERED: &str = "job.dead_lettered";
    /// A binding key for every job event.
    pub const ALL: &str = "job.#";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        let names = Names::with_prefix("t-1.");
        let all = names
            .all_exchanges()
            .into_iter()
            .chain(names.all_queues(&[1_000]));
        for name in all {
            assert!(name.starts_with("t-1.import"), "{name}");
        }
        assert_eq!(names.retry_queue(1_000), "t-1.import.retry.1000ms");
    }
}
