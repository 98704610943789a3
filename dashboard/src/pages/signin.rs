//! Signing in and out. The sign-in form has its own CSRF token (a cookie and a hidden
//! field that must match), so another site cannot sign a browser in as someone else.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
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
}

fn page(status: StatusCode, name: &str, error: Option<&str>) -> Result<Response, PageError> {
    let csrf = random_token();
    let html = render(&SignInPage {
        csrf: &csrf,
        name,
        error,
    })?;
    let cookie =
        format!("{SIGNIN_COOKIE}={csrf}; Path=/signin; HttpOnly; SameSite=Strict; Max-Age=1800");
    Ok((status, [(SET_COOKIE, cookie)], html).into_response())
}

pub async fn form() -> Result<Response, PageError> {
    page(StatusCode::OK, "", None)
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
            page(StatusCode::UNAUTHORIZED, name, Some(message))
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
