//! Binding a web authorization to the browser that started it.
//!
//! Without it, whoever holds an authorization link can have someone else approve it: an
//! insider starts a web flow as themselves, sends the link to a colleague, and the
//! colleague's Clio grant lands on the insider's connection. So the link StartAuthorization
//! returns for the web flow is auth-svc's own `/connect/start?state=…`. Opening it sets an
//! HttpOnly, SameSite=Lax cookie holding a fresh random secret (only its SHA-256 is
//! stored, on the state; the first browser to open the link binds it) and redirects to
//! Clio. The callback completes the flow only when the browser presents that cookie; a
//! callback without it is refused and recorded as ACCESS_DENIED. SameSite=Lax still sends
//! the cookie on Clio's top-level redirect back to the callback.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::callback::page;
use crate::context::Context;
use crate::store;
use crate::store::authorization_states::{Bound, BrowserBinding};

/// Where the person's browser starts a web authorization.
pub const START_PATH: &str = "/connect/start";

/// The cookie of one authorization: named after its state, so flows opened side by side in
/// one browser do not overwrite each other's.
pub fn cookie_name(state: &str) -> String {
    let digest = Sha256::digest(state.trim().as_bytes());
    format!("clio_connect_flow_{}", hex::encode(&digest[..8]))
}

pub fn binding_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The link a person opens: auth-svc's start page for this state.
pub fn start_link(ctx: &Context, state: &str) -> String {
    format!(
        "{}{START_PATH}?state={state}",
        ctx.config.public_base_url.trim_end_matches('/')
    )
}

/// The authorization's cookie value as the browser sent it.
pub fn presented(headers: &HeaderMap, state: &str) -> Option<String> {
    let wanted = cookie_name(state);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
}

#[derive(Deserialize)]
pub struct StartQuery {
    state: Option<String>,
}

/// `GET /connect/start?state=…`: binds the state to this browser and sends it to Clio.
pub async fn start(State(ctx): State<Context>, Query(query): Query<StartQuery>) -> Response {
    let Some(state) = query.state.filter(|s| !s.trim().is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Connection failed",
            "The link is missing its state.",
        );
    };
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let secret = URL_SAFE_NO_PAD.encode(random);
    let hash = crate::connect::state_hash(state.trim());
    let secret_hash = binding_hash(&secret);
    let binding = BrowserBinding {
        state_hash: &hash,
        binding_hash: &secret_hash,
        at: ctx.now(),
    };
    // The first browser to open a live web state binds it; the link then only leads on.
    let bound = match store::authorization_states::bind_browser(&ctx.pool, &binding).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Connection failed",
                "This link is unknown, expired, used, or already opened in another browser. \
                 Start the connection again from where you began.",
            );
        }
        Err(error) => {
            tracing::error!(%error, "cannot bind an authorization to a browser");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Connection failed",
                "Try again in a moment.",
            );
        }
    };
    redirect_to_clio(&ctx, &state, &secret, &bound)
}

/// Sends the browser to Clio's authorize URL (with the state) and sets the flow's cookie,
/// living as long as the state does.
fn redirect_to_clio(ctx: &Context, state: &str, secret: &str, bound: &Bound) -> Response {
    let Ok(mut location) = url::Url::parse(&bound.clio_authorize_url) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Connection failed",
            "Bad Clio link.",
        );
    };
    location
        .query_pairs_mut()
        .append_pair("state", state.trim());
    let secure = if ctx.config.public_base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={secret}; Path=/oauth/callback; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        cookie_name(state),
        bound.seconds_left.max(0)
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let (Ok(location), Ok(cookie)) = (
        HeaderValue::from_str(location.as_str()),
        HeaderValue::from_str(&cookie),
    ) {
        headers.insert(header::LOCATION, location);
        headers.insert(header::SET_COOKIE, cookie);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_by_its_states_name() {
        let mut headers = HeaderMap::new();
        let name = cookie_name("state-a");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {name}=secret-a; x=y")).unwrap(),
        );
        assert_eq!(presented(&headers, "state-a").as_deref(), Some("secret-a"));
        assert_eq!(presented(&headers, "state-b"), None);
        assert_ne!(cookie_name("state-a"), cookie_name("state-b"));
    }
}
