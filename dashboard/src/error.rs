//! A page that could not be shown or an action that could not be done, as the person sees
//! it: what went wrong in words, with the HTTP status that fits.

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use tonic::Code;

#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A service's refusal, explained: a refusal about the request is the person's to fix
    /// (shown as the service worded it, naming the field); a dependency failure is not.
    pub fn from_status(service: &str, status: &tonic::Status) -> PageError {
        let message = status.message();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                PageError::bad_request(format!("{service} refused this: {message}"))
            }
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => PageError::new(
                StatusCode::CONFLICT,
                format!("{service} could not do this now: {message}"),
            ),
            Code::NotFound => {
                PageError::new(StatusCode::NOT_FOUND, format!("{service}: {message}"))
            }
            Code::PermissionDenied => PageError::forbidden(format!(
                "{service} does not allow you to do this: {message}"
            )),
            Code::Unauthenticated => PageError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{service} did not accept the dashboard's credential for you; ask an \
                     operator to check your entry in the dashboard's configuration"
                ),
            ),
            Code::Unavailable | Code::DeadlineExceeded => {
                tracing::warn!(service, error = %status, "backend unavailable");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{service} cannot be reached just now; try again in a moment"),
                )
            }
            _ => {
                tracing::error!(service, error = %status, "backend failed");
                PageError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("{service} failed to answer ({:?})", status.code()),
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}
