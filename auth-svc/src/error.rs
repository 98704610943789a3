//! The one error type of auth-svc's operations, and its one mapping to gRPC status codes.
//!
//! Messages of client-facing variants are written for the caller and never hold a secret;
//! internal detail (database, decryption) is logged once here, where it is turned into a
//! status, and the caller sees only that something failed inside.

use tonic::{Code, Status};

use crate::token_vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A request field is malformed; the message names it (`principal: must not be empty`).
    #[error("{field}: {problem}")]
    InvalidArgument { field: String, problem: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The request is well-formed but the state does not allow it (state used or expired,
    /// connection revoked or needing reconnect, app not approved, Clio refused the code).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may call the RPC but not for this (a lease beyond the grant).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Clio failed transiently (after retries); trying later may work.
    #[error("Clio is unavailable: {0}")]
    ClioUnavailable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("token vault: {0}")]
    Vault(#[from] VaultError),
    #[error("audit outbox: {0}")]
    Outbox(#[from] audit_outbox::OutboxError),
    /// A bug or an impossible state; detail is for the log only.
    #[error("internal: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        AuthError::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            AuthError::InvalidArgument { .. } => Code::InvalidArgument,
            AuthError::NotFound(_) => Code::NotFound,
            AuthError::FailedPrecondition(_) => Code::FailedPrecondition,
            AuthError::PermissionDenied(_) => Code::PermissionDenied,
            AuthError::AlreadyExists(_) => Code::AlreadyExists,
            AuthError::ClioUnavailable(_) => Code::Unavailable,
            AuthError::Database(_) => Code::Unavailable,
            AuthError::Vault(_) | AuthError::Outbox(_) | AuthError::Internal(_) => Code::Internal,
        }
    }

    /// The status a caller sees. Server-side failures are logged here, once, with detail.
    pub fn into_status(self) -> Status {
        if let AuthError::InvalidArgument { field, problem } = self {
            return proto::FieldViolation::new(field, problem).into_status();
        }
        let code = self.code();
        let message = match &self {
            AuthError::Database(error) => {
                tracing::error!(error = %error, "database failure");
                "the database is unavailable; try again".to_owned()
            }
            AuthError::Vault(error) => {
                tracing::error!(error = %error, "token vault failure");
                "a stored secret could not be used".to_owned()
            }
            AuthError::Outbox(error) => {
                tracing::error!(error = %error, "audit outbox failure");
                "the change could not be recorded".to_owned()
            }
            AuthError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        Status::new(code, message)
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        error.into_status()
    }
}
