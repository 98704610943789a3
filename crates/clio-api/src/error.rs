//! How a failed call to Clio is classified, so callers branch on meaning, not on status
//! codes: a revoked grant needs the person to reconnect (retrying will not help), bad
//! client credentials need an operator, a rejected token needs a refresh (or is already
//! revoked), a rate limit says how long to wait, and transient failures (5xx, timeouts,
//! dropped connections) are worth retrying. Listing a resource adds what only a page read
//! can meet: a 403, a refused or redirected request, retries spent, an answer that is not
//! a page or is too large, a link to a foreign host, and cancellation.
//!
//! Messages carry Clio's error code and description (truncated) and never a request or
//! response body, so no token can leak through them.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::retry;

/// The longest piece of Clio's own error text kept in an error.
const MAX_DETAIL: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClioError {
    /// The code or refresh token is invalid, expired, revoked, already used, or does not
    /// match the redirect URI used at authorize.
    #[error("Clio refused the grant (invalid_grant): {description}")]
    InvalidGrant { description: String },
    /// The client id or secret is wrong for this region.
    #[error("Clio refused the client credentials (invalid_client): {description}")]
    InvalidClient { description: String },
    /// The access token is not (or no longer) valid here.
    #[error("Clio refused the access token (invalid_token): {description}")]
    InvalidToken { description: String },
    /// A 403 on a list: the token may not read this (Clio's message, printable).
    #[error("Clio refused access (403): {message}")]
    Forbidden { message: String },
    #[error("Clio rate-limited the call{}", retry_after_text(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, a timeout or a dropped connection: worth retrying.
    #[error("Clio is unavailable: {detail}")]
    Transient { detail: String },
    /// A list page kept failing (5xx, timeouts, an endless 429 storm) through every retry:
    /// Clio is down for now, and a later attempt may succeed.
    #[error("Clio kept failing after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: String },
    /// A list request Clio refused for good: a redirect (never followed) or a 4xx other
    /// than 401, 403 and 429. The message is Clio's, printable.
    #[error("Clio refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// A 200 whose body is not a list page.
    #[error("Clio answered something that is not a list page: {detail}")]
    MalformedPage { detail: String },
    /// A list page over the reader's byte limit (the importer's `max_page_bytes`); the
    /// rest of the body is never read.
    #[error(
        "Clio's answer is larger than importer.max_page_bytes ({limit} bytes); not read further"
    )]
    TooLarge { limit: u64 },
    /// A page link outside the token's region (host pinning): nothing was sent.
    #[error("refusing to send the token to {origin}: not the connection's region")]
    ForeignHost { origin: String },
    /// The caller stopped the read.
    #[error("cancelled")]
    Cancelled,
    /// Anything else (an unexpected status, a malformed answer).
    #[error("Clio answered unexpectedly{}: {detail}", status_text(.status))]
    Other { status: Option<u16>, detail: String },
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {}s)", d.as_secs()))
        .unwrap_or_default()
}

fn status_text(status: &Option<u16>) -> String {
    status.map(|s| format!(" ({s})")).unwrap_or_default()
}

/// The class of a [`ClioError`], for metric labels and branching without the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClioErrorKind {
    InvalidGrant,
    InvalidClient,
    InvalidToken,
    Forbidden,
    RateLimited,
    Transient,
    Exhausted,
    Rejected,
    MalformedPage,
    TooLarge,
    ForeignHost,
    Cancelled,
    Other,
}

impl ClioErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClioErrorKind::InvalidGrant => "invalid_grant",
            ClioErrorKind::InvalidClient => "invalid_client",
            ClioErrorKind::InvalidToken => "invalid_token",
            ClioErrorKind::Forbidden => "forbidden",
            ClioErrorKind::RateLimited => "rate_limited",
            ClioErrorKind::Transient => "transient",
            ClioErrorKind::Exhausted => "exhausted",
            ClioErrorKind::Rejected => "rejected",
            ClioErrorKind::MalformedPage => "malformed_page",
            ClioErrorKind::TooLarge => "too_large",
            ClioErrorKind::ForeignHost => "foreign_host",
            ClioErrorKind::Cancelled => "cancelled",
            ClioErrorKind::Other => "other",
        }
    }
}

impl ClioError {
    pub fn kind(&self) -> ClioErrorKind {
        match self {
            ClioError::InvalidGrant { .. } => ClioErrorKind::InvalidGrant,
            ClioError::InvalidClient { .. } => ClioErrorKind::InvalidClient,
            ClioError::InvalidToken { .. } => ClioErrorKind::InvalidToken,
            ClioError::Forbidden { .. } => ClioErrorKind::Forbidden,
            ClioError::RateLimited { .. } => ClioErrorKind::RateLimited,
            ClioError::Transient { .. } => ClioErrorKind::Transient,
            ClioError::Exhausted { .. } => ClioErrorKind::Exhausted,
            ClioError::Rejected { .. } => ClioErrorKind::Rejected,
            ClioError::MalformedPage { .. } => ClioErrorKind::MalformedPage,
            ClioError::TooLarge { .. } => ClioErrorKind::TooLarge,
            ClioError::ForeignHost { .. } => ClioErrorKind::ForeignHost,
            ClioError::Cancelled => ClioErrorKind::Cancelled,
            ClioError::Other { .. } => ClioErrorKind::Other,
        }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClioError::RateLimited { .. }
                | ClioError::Transient { .. }
                | ClioError::Exhausted { .. }
        )
    }

    /// How long Clio asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClioError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A transport failure: no answer from Clio at all.
    pub(crate) fn from_transport(error: &reqwest::Error) -> ClioError {
        if error.is_builder() {
            return ClioError::Other {
                status: None,
                detail: format!("cannot build the request: {}", error_chain(error)),
            };
        }
        let what = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "cannot connect"
        } else {
            "connection failed"
        };
        ClioError::Transient {
            detail: format!("{what}: {}", error_chain(error)),
        }
    }

    /// What kind of transport failure a list read met, for its retry log and for
    /// [`ClioError::Exhausted`]: the kind only, never the URL or the error's chain.
    pub(crate) fn transport_failure(error: &reqwest::Error) -> &'static str {
        if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else if error.is_body() || error.is_decode() {
            "connection dropped while reading the response"
        } else {
            "connection failed"
        }
    }

    /// Classifies a non-success answer from its status, headers and body.
    pub(crate) fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClioError {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return ClioError::RateLimited {
                retry_after: retry::retry_after(headers),
            };
        }
        if status.is_server_error() {
            return ClioError::Transient {
                detail: format!("status {}", status.as_u16()),
            };
        }
        match parse_error_body(body) {
            Some(ParsedError { code, description }) => {
                classify_oauth_code(&code, description, Some(status.as_u16()))
            }
            None if status == StatusCode::UNAUTHORIZED => ClioError::InvalidToken {
                description: "status 401".into(),
            },
            None => ClioError::Other {
                status: Some(status.as_u16()),
                detail: "no error description".into(),
            },
        }
    }
}

/// Maps an OAuth error code (`error` field) to a class.
pub(crate) fn classify_oauth_code(
    code: &str,
    description: String,
    status: Option<u16>,
) -> ClioError {
    match code {
        "invalid_grant" => ClioError::InvalidGrant { description },
        "invalid_client" | "unauthorized_client" => ClioError::InvalidClient { description },
        "invalid_token" => ClioError::InvalidToken { description },
        other => ClioError::Other {
            status,
            detail: truncate(&format!("{other}: {description}")),
        },
    }
}

struct ParsedError {
    code: String,
    description: String,
}

/// Clio's two error shapes: OAuth's flat `{"error","error_description"}` and the API's
/// `{"error":{"type","message"}}`.
fn parse_error_body(body: &[u8]) -> Option<ParsedError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Body {
        Flat {
            error: String,
            #[serde(default)]
            error_description: Option<String>,
        },
        Nested {
            error: Nested,
        },
    }
    #[derive(Deserialize)]
    struct Nested {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body).ok()? {
        Body::Flat {
            error,
            error_description,
        } => Some(ParsedError {
            code: error,
            description: truncate(error_description.as_deref().unwrap_or("")),
        }),
        Body::Nested { error } => Some(ParsedError {
            code: error.kind.unwrap_or_default(),
            description: truncate(error.message.as_deref().unwrap_or("")),
        }),
    }
}

pub(crate) fn truncate(text: &str) -> String {
    if text.len() <= MAX_DETAIL {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    truncate(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, body: &str) -> ClioError {
        ClioError::from_response(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn oauth_errors_are_classified_by_code() {
        assert_eq!(
            classify(
                400,
                r#"{"error":"invalid_grant","error_description":"code used"}"#
            ),
            ClioError::InvalidGrant {
                description: "code used".into()
            }
        );
        assert_eq!(
            classify(401, r#"{"error":"invalid_client"}"#).kind(),
            ClioErrorKind::InvalidClient
        );
        assert_eq!(
            classify(401, r#"{"error":"invalid_token","error_description":"x"}"#).kind(),
            ClioErrorKind::InvalidToken
        );
        assert_eq!(classify(401, "").kind(), ClioErrorKind::InvalidToken);
        assert_eq!(
            classify(403, r#"{"error":{"type":"Forbidden","message":"no"}}"#),
            ClioError::Other {
                status: Some(403),
                detail: "Forbidden: no".into()
            }
        );
    }

    #[test]
    fn server_errors_are_transient_and_429_carries_retry_after() {
        assert!(classify(502, "<html>").is_retryable());
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        let error = ClioError::from_response(StatusCode::TOO_MANY_REQUESTS, &headers, b"");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(error.is_retryable());
        assert!(!classify(400, r#"{"error":"invalid_grant"}"#).is_retryable());
    }

    #[test]
    fn long_descriptions_are_truncated() {
        let long = "é".repeat(500);
        let text = truncate(&long);
        assert!(text.len() <= MAX_DETAIL + 3, "{}", text.len());
    }
}
