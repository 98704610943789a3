//! `GET /oauth/authorize` (the consent page), the decision a person makes on it, and the
//! out-of-band approval page.
//!
//! The admin consent hook and the browser form share [`decide`], so a test that approves
//! without a browser gets exactly what the browser would have got.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use url::Url;
use url::form_urlencoded;

use super::pages::{escape, page};
use crate::apps::AppSpec;
use crate::clock::after;
use crate::region::RegionState;

/// Allow or deny on Clio's consent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// What the browser gets after the decision (admin `POST /__sim/consent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentOutcome {
    /// HTTP status of Clio's answer: 302 when it redirects, 200 for a page, 400 for a bad
    /// authorize request.
    pub status: u16,
    /// Where Clio redirects the browser, if it does.
    pub location: Option<String>,
    /// The authorization code, when approved.
    pub code: Option<String>,
    /// The `<title>` of the page the browser finally shows: the out-of-band approval
    /// page (`Success code=...`, `Failure error=access_denied`), Clio's own page after a
    /// denial without redirect, or the error page of a bad request.
    pub page_title: Option<String>,
}

/// A validated authorize request.
struct Authorize {
    app: AppSpec,
    redirect_uri: String,
    state: Option<String>,
    redirect_on_decline: bool,
    response_type: Option<String>,
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Errors Clio shows on its own page, because there is no trustworthy redirect target.
fn validate(state: &RegionState, params: &[(String, String)]) -> Result<Authorize, String> {
    let client_id = param(params, "client_id").ok_or("client_id is missing")?;
    let app = state
        .app(client_id)
        .ok_or_else(|| format!("unknown client_id {client_id}"))?;
    let redirect_uri = param(params, "redirect_uri").ok_or("redirect_uri is missing")?;
    if !app.accepts_redirect(redirect_uri) {
        return Err(format!(
            "redirect_uri {redirect_uri} is not registered for this application"
        ));
    }
    Ok(Authorize {
        redirect_uri: redirect_uri.to_owned(),
        state: param(params, "state").map(str::to_owned),
        redirect_on_decline: param(params, "redirect_on_decline") == Some("true"),
        response_type: param(params, "response_type").map(str::to_owned),
        app,
    })
}

fn is_out_of_band(redirect_uri: &str) -> bool {
    Url::parse(redirect_uri).is_ok_and(|url| url.path() == "/oauth/approval")
}

/// `redirect_uri` with the result parameters (and `state`) appended.
fn redirect_with(request: &Authorize, result: (&str, &str)) -> String {
    match Url::parse(&request.redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                query.append_pair(result.0, result.1);
                if let Some(state) = &request.state {
                    query.append_pair("state", state);
                }
            }
            url.to_string()
        }
        Err(_) => request.redirect_uri.clone(),
    }
}

fn error_outcome(message: &str) -> ConsentOutcome {
    ConsentOutcome {
        status: 400,
        location: None,
        code: None,
        page_title: Some(format!("Error: {message}")),
    }
}

/// The title of the out-of-band approval page for these query parameters.
fn approval_title(state: &RegionState, params: &[(String, String)]) -> Option<String> {
    if let Some(code) = param(params, "code") {
        let template = &state.shared.config.approval_success_title;
        let title = template
            .replace("{code}", code)
            .replace("{state}", param(params, "state").unwrap_or_default());
        return Some(title);
    }
    param(params, "error").map(|error| format!("Failure error={error}"))
}

/// The decision of user `user_id` of `account` (1-based) on the consent page for the
/// authorize request in `params`.
pub(crate) fn decide(
    state: &RegionState,
    params: &[(String, String)],
    account: u32,
    user_id: i64,
    decision: Decision,
) -> ConsentOutcome {
    let request = match validate(state, params) {
        Ok(request) => request,
        Err(message) => return error_outcome(&message),
    };
    if state.account(account).is_none() {
        return error_outcome(&format!("unknown Clio account {account}"));
    }
    let Some(user_key) = state.resolve_user(account, user_id) else {
        return error_outcome(&format!("unknown Clio user {user_id}"));
    };
    let out_of_band = is_out_of_band(&request.redirect_uri);
    let redirect = |result: (&str, &str)| {
        let location = redirect_with(&request, result);
        let title = if out_of_band {
            let query = Url::parse(&location)
                .map(|url| url.query_pairs().into_owned().collect::<Vec<_>>())
                .unwrap_or_default();
            approval_title(state, &query)
        } else {
            None
        };
        (location, title)
    };
    if request.response_type.as_deref() != Some("code") {
        let (location, page_title) = redirect(("error", "unsupported_response_type"));
        return ConsentOutcome {
            status: 302,
            location: Some(location),
            code: None,
            page_title,
        };
    }
    match decision {
        Decision::Allow => {
            let clock = &state.shared.clock;
            let expires = after(clock.now(), state.shared.config.code_ttl);
            let code = state.oauth.issue_code(
                &request.app.client_id,
                &request.redirect_uri,
                account,
                user_key,
                expires,
            );
            let (location, page_title) = redirect(("code", &code));
            ConsentOutcome {
                status: 302,
                location: Some(location),
                code: Some(code),
                page_title,
            }
        }
        Decision::Deny if request.redirect_on_decline || out_of_band => {
            let (location, page_title) = redirect(("error", "access_denied"));
            ConsentOutcome {
                status: 302,
                location: Some(location),
                code: None,
                page_title,
            }
        }
        Decision::Deny => ConsentOutcome {
            status: 200,
            location: None,
            code: None,
            page_title: Some("Failure error=access_denied".to_owned()),
        },
    }
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// `GET /oauth/authorize`: the page listing the app's permissions with ALLOW and DENY.
pub(crate) async fn consent_page(
    State(state): State<Arc<RegionState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_pairs(query.as_deref());
    let request = match validate(&state, &params) {
        Ok(request) => request,
        Err(message) => return page(StatusCode::BAD_REQUEST, &format!("Error: {message}"), ""),
    };
    let hidden: String = params
        .iter()
        .map(|(key, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(key),
                escape(value)
            )
        })
        .collect();
    let permissions: String = request
        .app
        .permissions
        .iter()
        .map(|permission| format!("<li>{}</li>", escape(permission)))
        .collect();
    let body = format!(
        "<p>{} requests access to:</p><ul>{permissions}</ul>\n<form method=\"post\" action=\"/oauth/authorize\">{hidden}\n<label>Clio account <input name=\"account\" value=\"1\"></label>\n<label>Clio user id <input name=\"user_id\" value=\"1\"></label>\n<button name=\"decision\" value=\"allow\">Allow</button> <button name=\"decision\" value=\"deny\">Deny</button></form>",
        escape(&request.app.client_id)
    );
    page(
        StatusCode::OK,
        &format!("Authorize {}", request.app.client_id),
        &body,
    )
}

/// `POST /oauth/authorize`: the ALLOW or DENY button of the consent page.
pub(crate) async fn decide_in_browser(
    State(state): State<Arc<RegionState>>,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let user_id = param(&params, "user_id")
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or(1);
    let account = param(&params, "account")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    let decision = if param(&params, "decision") == Some("allow") {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let outcome = decide(&state, &params, account, user_id, decision);
    let title = outcome.page_title.clone().unwrap_or_default();
    match outcome.location {
        Some(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        None => page(
            StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK),
            &title,
            "",
        ),
    }
}

/// `GET /oauth/approval`: the out-of-band page whose title carries the result.
pub(crate) async fn approval_page(
    State(state): State<Arc<RegionState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_pairs(query.as_deref());
    match approval_title(&state, &params) {
        Some(title) => {
            let body = "<p>Copy the code above into the application.</p>";
            page(StatusCode::OK, &title, body)
        }
        None => page(
            StatusCode::BAD_REQUEST,
            "Error: no authorization result",
            "",
        ),
    }
}
