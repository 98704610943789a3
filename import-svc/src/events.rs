//! Job state changes published on the events exchange for downstream teams
//! (`job.started`, `job.progress`, `job.completed`, `job.failed`, `job.cancelled`,
//! `job.dead_lettered`), as protobuf `JobEvent`s with publisher confirms.
//!
//! An event that cannot be published is logged and dropped: the job's state of record is
//! the database (GetJob/WatchJob), and a job must not fail because nobody listens.

use std::sync::Arc;

use proto::imports::v1 as pb;
use proto::queue::{content_type, event_key};
use scope_catalog::Resource;
use sqlx::PgPool;
use uuid::Uuid;

use crate::job::{checkpoints, store};
use crate::queue::publisher::{Outgoing, Publisher};
use proto::time::timestamp;

#[derive(Debug, Clone, Copy)]
pub enum EventKind {
    Started,
    Progress,
    Completed,
    Failed,
    Cancelled,
    DeadLettered,
}

impl EventKind {
    fn routing_key(self) -> &'static str {
        match self {
            EventKind::Started => event_key::JOB_STARTED,
            EventKind::Progress => event_key::JOB_PROGRESS,
            EventKind::Completed => event_key::JOB_COMPLETED,
            EventKind::Failed => event_key::JOB_FAILED,
            EventKind::Cancelled => event_key::JOB_CANCELLED,
            EventKind::DeadLettered => event_key::JOB_DEAD_LETTERED,
        }
    }
}

pub struct Events {
    publisher: Arc<Publisher>,
    exchange: String,
}

impl Events {
    pub fn new(publisher: Arc<Publisher>, exchange: String) -> Self {
        Events {
            publisher,
            exchange,
        }
    }

    /// Publishes the job as it is now in the database.
    pub async fn job(&self, kind: EventKind, job_id: Uuid, pool: &PgPool) {
        let job = match (
            store::get(pool, job_id).await,
            checkpoints::resource_rows(pool, job_id).await,
        ) {
            (Ok(Some(job)), Ok(resources)) => store::to_wire(&job, &resources),
            (Ok(None), _) => return,
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%job_id, %error, "cannot read job for its event");
                return;
            }
        };
        self.publish(kind, job).await;
    }

    pub async fn page(&self, job_id: Uuid, resource: Resource, records: usize, pool: &PgPool) {
        tracing::debug!(%job_id, %resource, records, "page committed");
        self.job(EventKind::Progress, job_id, pool).await;
    }

    async fn publish(&self, kind: EventKind, job: pb::Job) {
        let event = pb::JobEvent {
            event_id: Uuid::now_v7().to_string(),
            job: Some(job),
            at: Some(timestamp(chrono::Utc::now())),
        };
        let body = prost::Message::encode_to_vec(&event);
        let outcome = self
            .publisher
            .publish(Outgoing {
                exchange: &self.exchange,
                routing_key: kind.routing_key(),
                body: &body,
                content_type: content_type::PROTOBUF,
                message_id: Some(&event.event_id),
                headers: crate::queue::trace_headers::current(),
                mandatory: false,
            })
            .await;
        if let Err(error) = outcome {
            tracing::warn!(%error, routing_key = kind.routing_key(), "job event not published");
        }
    }
}
