//! The one error type of import-svc's gRPC operations, and its one mapping to status
//! codes. A bad field is `INVALID_ARGUMENT` with the field in the standard `BadRequest`
//! detail; a value Postgres cannot store is the caller's data, not an outage; internal
//! detail (database, broker, auth-svc) is logged here, once, and never sent.

use tonic::Status;
use uuid::Uuid;

use crate::audit::RecordError;
use crate::job::page_records::is_data_error;
use crate::queue::publisher::PublishError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("job {0} not found")]
    JobNotFound(Uuid),
    #[error("the job queue is unavailable: {0}")]
    QueueUnavailable(#[from] PublishError),
    #[error("database error")]
    Database(sqlx::Error),
    /// Postgres refused a value of the request (SQLSTATE class 22).
    #[error("the request holds a value the database cannot store")]
    BadData(sqlx::Error),
    /// Only a bug builds an event the outbox refuses.
    #[error("cannot record the audit event: {0}")]
    Audit(String),
    /// auth-svc could not say whose the connection is (a tenant-limited caller's submit).
    #[error("auth-svc is unavailable: {0}")]
    AuthUnavailable(String),
    /// Something the request names does not exist (a suggestion, a connection).
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state of what it names refuses it.
    #[error("{0}")]
    Precondition(String),
    /// Clio or auth-svc did not answer in time; trying again later may work.
    #[error("a dependency is unavailable: {0}")]
    DependencyUnavailable(String),
    /// Already audited; the answer to send.
    #[error("{}", .0.message())]
    Refused(Status),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_data_error(&error) {
            ApiError::BadData(error)
        } else {
            ApiError::Database(error)
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Database(inner) => inner.into(),
            RecordError::Outbox(audit_outbox::OutboxError::Database(inner)) => inner.into(),
            RecordError::Outbox(other) => ApiError::Audit(other.to_string()),
        }
    }
}

impl ApiError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match &error {
            ApiError::Invalid { field, problem } => {
                proto::FieldViolation::new(field.clone(), problem.clone()).into_status()
            }
            ApiError::JobNotFound(_) => Status::not_found(error.to_string()),
            // The broker's and auth-svc's own words stay in the log: the caller learns which
            // dependency failed and that trying again may work.
            ApiError::QueueUnavailable(publish) => {
                tracing::warn!(%error, "submit failed");
                Status::unavailable(match publish {
                    // Our own words: which step failed and what the caller may do.
                    PublishError::ConfirmTimeout(_) | PublishError::Nacked => format!(
                        "the job queue is unavailable: {publish}; submitting again with the \
                         same job id is safe (a job id runs once)"
                    ),
                    // The client library's words stay in the log.
                    _ => "the job queue is unavailable; try again".to_owned(),
                })
            }
            ApiError::Audit(problem) => {
                tracing::error!(%problem, "audit event refused by the outbox");
                Status::internal("cannot record the audit event")
            }
            ApiError::Database(inner) => {
                tracing::error!(error = %inner, "database error in import api");
                Status::unavailable("database unavailable")
            }
            ApiError::AuthUnavailable(_) => {
                tracing::warn!(%error, "submit failed");
                Status::unavailable("auth-svc is unavailable; try again")
            }
            ApiError::NotFound(what) => Status::not_found(what.clone()),
            ApiError::Precondition(why) => Status::failed_precondition(why.clone()),
            ApiError::DependencyUnavailable(_) => {
                tracing::warn!(%error, "request failed on a dependency");
                Status::unavailable("Clio or auth-svc is unavailable; try again")
            }
            ApiError::Refused(status) => status.clone(),
            ApiError::BadData(inner) => {
                tracing::warn!(error = %inner, "database refused a value of a request");
                Status::invalid_argument(error.to_string())
            }
        }
    }
}
