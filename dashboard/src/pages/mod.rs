//! The pages, one module each, and what they share: the signed-in person (`Signed`), the
//! frame around every page (`Chrome`), and the stylesheet.

pub mod apps;
pub mod audit;
pub mod connection;
pub mod connections;
pub mod imports;
pub mod offboarding;
pub mod overview;
pub mod records;
pub mod reviews;
pub mod signin;
pub mod suggestions;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use service_runtime::Role;

use crate::AppState;
use crate::error::PageError;
use crate::security::check_csrf;
use crate::sessions::Session;

/// A request from a signed-in person; anyone else is sent to the sign-in page.
pub struct Signed(pub Session);

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        state
            .sessions
            .find(&parts.headers)
            .map(Signed)
            .ok_or_else(|| Redirect::to("/signin").into_response())
    }
}

impl Signed {
    /// Refuses, before any call, a person whose configured roles do not include `role`.
    /// (The services check again: this only spares a pointless call and says why.)
    pub fn require(&self, role: Role, to: &str) -> Result<(), PageError> {
        if self.0.person.has(role) {
            Ok(())
        } else {
            Err(PageError::forbidden(format!(
                "{to} needs the {} role, which you do not have.",
                role.as_str()
            )))
        }
    }

    /// Checks the CSRF token a form sent back.
    pub fn check_form(&self, csrf: &str) -> Result<(), PageError> {
        check_csrf(&self.0.csrf, csrf)
    }

    pub fn chrome(&self, page: &'static str) -> Chrome {
        let person = &self.0.person;
        Chrome {
            person: person.name.clone(),
            csrf: self.0.csrf.clone(),
            page,
            compliance: person.has(Role::Compliance),
            operator: person.has(Role::Operator),
            billing: person.has(Role::BillingReviewer) || person.has(Role::BillingApprover),
            records: person.has(Role::DataReader),
        }
    }
}

/// What the frame of every page shows: who is signed in, the navigation their roles
/// open, and the sign-out form.
pub struct Chrome {
    pub person: String,
    pub csrf: String,
    /// The current page's name, to mark it in the navigation.
    pub page: &'static str,
    pub compliance: bool,
    pub operator: bool,
    pub billing: bool,
    pub records: bool,
}

/// Renders a page template, or explains why it could not be.
pub fn render(page: &impl Template) -> Result<Html<String>, PageError> {
    page.render().map(Html).map_err(|e| {
        tracing::error!(error = %e, "template failed");
        PageError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be drawn",
        )
    })
}

/// After a successful form, back to a list with what was done (a fixed word, never text
/// from the request).
pub fn done(path: &str, what: &'static str) -> Redirect {
    Redirect::to(&format!("{path}?done={what}"))
}

/// The one line a list shows after a form succeeded.
pub fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "approved" => Some("Approved."),
        "rejected" => Some("Rejected."),
        "revoked" => Some(
            "Revoked: the connection can no longer be used, and Clio has been asked to deauthorize it.",
        ),
        "attested" => Some("Decision recorded."),
        "offboarded" => Some(
            "Offboarding started: every connection of the person is revoked here and Clio is asked to deauthorize each.",
        ),
        _ => None,
    }
}

/// `path?a=1&b=2`, each value percent-encoded: links that keep a list's filters.
pub fn query_string(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let encoded: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={encoded}")
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

pub async fn script() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/tail.js"),
    )
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/dashboard.css"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_their_values() {
        assert_eq!(
            query_string(
                "/connections",
                &[("principal", "a b&c=d"), ("page_token", "x/y+")]
            ),
            "/connections?principal=a%20b%26c%3Dd&page_token=x%2Fy%2B"
        );
    }
}
