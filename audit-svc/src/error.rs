//! What can go wrong in audit-svc's handlers, and the one mapping to gRPC status codes.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The request is wrong; the message names the field (`events[3].tenant: ...`).
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The caller may not do this (a writer recording what its grant does not cover); the
    /// message names the field (`events[3].kind: ...`).
    #[error("{field}: {problem}")]
    Forbidden { field: String, problem: String },
    /// An event id already stored with different content: an idempotency key reused for
    /// another fact is a producer bug, so it is refused rather than silently ignored.
    #[error("{field}: {problem}")]
    Conflict { field: String, problem: String },
    /// Concurrent appends kept colliding on the same event id (another tenant's chain
    /// took it); the caller may retry the whole request.
    #[error("concurrent appends collided; retry the request")]
    Contended,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data this service cannot read back (never the caller's fault).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuditError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        AuditError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<AuditError> for Status {
    fn from(error: AuditError) -> Self {
        match &error {
            AuditError::Invalid { field, problem } => {
                proto::FieldViolation::new(field.clone(), problem.clone()).into_status()
            }
            AuditError::NotFound(_) => Status::not_found(error.to_string()),
            AuditError::Forbidden { .. } => Status::permission_denied(error.to_string()),
            AuditError::Conflict { .. } => Status::already_exists(error.to_string()),
            AuditError::Contended => Status::aborted(error.to_string()),
            AuditError::Database(inner) => {
                // Logged here, where it is handled; the caller learns only the class.
                tracing::error!(error = %inner, "database error");
                Status::unavailable("the audit database is unavailable")
            }
            AuditError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
