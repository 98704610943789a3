//! What every answer and every form submission goes through: security headers on every
//! response, and the CSRF and origin checks of every state-changing request.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

use crate::error::PageError;

/// Only the dashboard's own stylesheet and script; no inline script or style, no framing,
/// forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every response, error pages included.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it Chromium sends `Origin: null` on the dashboard's own
        // form posts, which the origin check must refuse.
        (header::REFERRER_POLICY, "same-origin"),
        // Pages show who holds what access: no cache keeps a copy after sign-out.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Refuses a state-changing request from another origin. Browsers send `Origin` on every
/// POST; when it is present it must be this host. (SameSite=Strict already keeps the
/// session cookie off cross-site requests; this and the token are the other two locks.)
pub async fn same_origin(request: Request, next: Next) -> Result<Response, PageError> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        check_origin(request.headers())?;
    }
    Ok(next.run(request).await)
}

fn check_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => Ok(()),
        _ => Err(PageError::forbidden(
            "This form was sent from another site. Open the dashboard and try again.",
        )),
    }
}

/// Checks a form's CSRF token against the one it must carry, in constant time.
pub fn check_csrf(expected: &str, sent: &str) -> Result<(), PageError> {
    if !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(sent.as_bytes())) {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "This form has expired or did not come from this dashboard. Reload the page and try again.",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_token_matches_only_itself() {
        assert!(check_csrf("abc", "abc").is_ok());
        assert!(check_csrf("abc", "abd").is_err());
        assert!(check_csrf("abc", "").is_err());
        assert!(check_csrf("", "").is_err());
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8090"));
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8090"),
        );
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&headers).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&headers).is_err());
    }
}
