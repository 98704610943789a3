//! Signing in and out. The sign-in form has its own CSRF token (a cookie and a hidden
//! field that must match), so another site cannot sign a browser in as someone else.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::SET_COOKIE;
use http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;

use super::{Signed, render};
use crate::AppState;
use crate::error::PageError;
use crate::people::{Refusal, random_token};
use crate::security::check_csrf;
use crate::sessions::cookie;

const SIGNIN_COOKIE: &str = "clio_dashboard_signin";

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage<'a> {
    csrf: &'a str,
    name: &'a str,
    error: Option<&'a str>,
    /// The identity provider's button, when one is configured.
    provider: Option<&'a str>,
}

fn page(
    state: &AppState,
    status: StatusCode,
    name: &str,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let csrf = random_token();
    let html = render(&SignInPage {
        csrf: &csrf,
        name,
        error,
        provider: state.oidc.as_ref().map(|p| p.label()),
    })?;
    let cookie =
        format!("{SIGNIN_COOKIE}={csrf}; Path=/signin; HttpOnly; SameSite=Strict; Max-Age=1800");
    Ok((status, [(SET_COOKIE, cookie)], html).into_response())
}

pub async fn form(State(state): State<AppState>) -> Result<Response, PageError> {
    page(&state, StatusCode::OK, "", None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    check_csrf(&expected, &form.csrf)?;
    let name = form.name.trim();
    match state
        .people
        .sign_in(name, SecretString::from(form.password))
        .await
    {
        Ok(person) => {
            tracing::info!(person = %person.name, "signed in");
            let cookie = state.sessions.start(person);
            Ok(([(SET_COOKIE, cookie)], Redirect::to("/")).into_response())
        }
        Err(refusal) => {
            tracing::warn!(name, ?refusal, "sign-in refused");
            let message = match refusal {
                Refusal::WrongNameOrPassword => "That name and password do not match.",
                Refusal::LockedOut => {
                    "Too many failed sign-ins for this name. Wait a few minutes and try again."
                }
            };
            page(&state, StatusCode::UNAUTHORIZED, name, Some(message))
        }
    }
}

#[derive(Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, PageError> {
    signed.check_form(&form.csrf)?;
    let cookie = state.sessions.end(&headers);
    Ok(([(SET_COOKIE, cookie)], Redirect::to("/signin")).into_response())
}

/// The cookie binding a sign-in through the identity provider to the browser that started
/// it. `SameSite=Lax`: the provider sends the browser back with a top-level GET, which Lax
/// cookies go with (Strict ones would not).
const OIDC_COOKIE: &str = "clio_dashboard_oidc";

/// Sends the browser to the identity provider.
pub async fn oidc_start(State(state): State<AppState>) -> Result<Response, PageError> {
    let provider = state.oidc.as_ref().ok_or_else(|| {
        PageError::new(StatusCode::NOT_FOUND, "no identity provider is configured")
    })?;
    let start = provider.start().await.map_err(|e| {
        tracing::warn!(error = %e, "oidc sign-in could not start");
        PageError::new(StatusCode::BAD_GATEWAY, e.to_string())
    })?;
    let cookie = format!(
        "{OIDC_COOKIE}={}; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age=600",
        start.state
    );
    Ok(([(SET_COOKIE, cookie)], Redirect::to(&start.url)).into_response())
}

#[derive(Deserialize)]
pub struct OidcCallback {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
    /// The provider's refusal (`access_denied`, ...), instead of a code.
    #[serde(default)]
    error: String,
}

/// Where the identity provider sends the browser back: the state must be the one this
/// browser started, the code is exchanged and the ID token checked, and the person it
/// names must be one of the configured people.
pub async fn oidc_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(callback): Query<OidcCallback>,
) -> Result<Response, PageError> {
    let provider = state.oidc.as_ref().ok_or_else(|| {
        PageError::new(StatusCode::NOT_FOUND, "no identity provider is configured")
    })?;
    let refuse = |message: String| {
        tracing::warn!(%message, "oidc sign-in refused");
        page(&state, StatusCode::UNAUTHORIZED, "", Some(&message))
    };
    if !callback.error.is_empty() {
        return refuse(format!(
            "The identity provider did not sign you in ({}).",
            callback.error.chars().take(100).collect::<String>()
        ));
    }
    // Bound to this browser: a callback URL carried to another browser (login CSRF) or
    // replayed is refused here, and the state is single-use in the provider too.
    let bound = cookie(&headers, OIDC_COOKIE).unwrap_or_default();
    if check_csrf(&bound, &callback.state).is_err() {
        return refuse("This sign-in was not started in this browser; start again.".into());
    }
    let name = match provider.finish(&callback.state, &callback.code).await {
        Ok(name) => name,
        Err(e) => {
            return refuse(format!(
                "Signing in through the identity provider failed: {e}."
            ));
        }
    };
    let Some(person) = state.people.by_name(&name) else {
        return refuse(format!(
            "{name} signed in at the identity provider but is not one of this dashboard's people; ask an operator to add them."
        ));
    };
    tracing::info!(person = %person.name, "signed in through the identity provider");
    let session = state.sessions.start(person);
    let clear = format!("{OIDC_COOKIE}=; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    // A page, not a redirect: the browser arrived from the provider's site, and a
    // SameSite=Strict session cookie is only sent once it navigates from this one.
    let html = Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url=/\"><title>Signed in</title></head>\
         <body><p><a href=\"/\">Continue to the dashboard</a></p></body></html>",
    );
    let mut response = html.into_response();
    for value in [session, clear] {
        response.headers_mut().append(
            SET_COOKIE,
            http::HeaderValue::from_str(&value)
                .map_err(|_| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie"))?,
        );
    }
    Ok(response)
}
