//! API v4 error answers: `{"error":{"type","message"}}`, except token problems, which are
//! OAuth's flat `{"error":"invalid_token","error_description"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oauth::token::oauth_error;

#[derive(Debug)]
pub(crate) enum ApiError {
    InvalidToken(&'static str),
    Typed {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
}

impl ApiError {
    pub(crate) fn typed(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError::Typed {
            status,
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_fields(message: impl Into<String>) -> ApiError {
        ApiError::typed(StatusCode::BAD_REQUEST, "InvalidFields", message)
    }

    /// A bad parameter value (limit out of range, unparsable date, bad page token).
    pub(crate) fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::typed(StatusCode::BAD_REQUEST, "ArgumentError", message)
    }

    /// What the answer's `message` (or `error_description`) says.
    pub(crate) fn message(&self) -> &str {
        match self {
            ApiError::InvalidToken(description) => description,
            ApiError::Typed { message, .. } => message,
        }
    }

    /// `If-Match` named an older ETag.
    pub(crate) fn precondition_failed() -> ApiError {
        ApiError::typed(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "the record has changed since the given ETag",
        )
    }

    pub(crate) fn not_found() -> ApiError {
        ApiError::typed(
            StatusCode::NOT_FOUND,
            "RecordNotFound",
            "the record does not exist",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::InvalidToken(description) => {
                oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description)
            }
            ApiError::Typed {
                status,
                kind,
                message,
            } => (
                status,
                Json(json!({"error": {"type": kind, "message": message}})),
            )
                .into_response(),
        }
    }
}
