//! Starting a simulator, connecting an app as a user, and calling the API.

use clio_sim::{AppSpec, ClioSim, Decision, Region, SimConfig};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
pub const CLIENT_ID: &str = "cid";
pub const SECRET: &str = "s3cret-value";

/// A simulator without a rate limit (tests that need one say so).
pub async fn start() -> ClioSim {
    start_with(SimConfig {
        regions: vec![Region::Us, Region::Eu],
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
}

pub async fn start_with(config: SimConfig) -> ClioSim {
    ClioSim::start(config).await.unwrap()
}

pub fn app(permissions: &[&str]) -> AppSpec {
    AppSpec {
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        redirect_uris: vec![REDIRECT.into()],
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// Every permission the served resources need, read and write.
pub const ALL: &[&str] = &[
    "users:read",
    "contacts:write",
    "matters:write",
    "calendar:write",
    "activities:write",
];

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn authorize_url(base: &str, client_id: &str, redirect_uri: &str, state: &str) -> String {
    let mut url = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state);
    url.to_string()
}

/// A token-endpoint answer.
pub async fn token_request(base: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = http()
        .post(format!("{base}/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Access and refresh token of a fresh grant.
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

/// Registers `app` in `region` (if `register`), approves it as user 1 and exchanges the
/// code.
pub async fn connect_as(sim: &ClioSim, region: Region, app: &AppSpec, user: i64) -> Tokens {
    connect_in_account(sim, region, app, 1, user).await
}

/// [`connect_as`] by a user of `account` (1-based, `SimConfig::accounts`).
pub async fn connect_in_account(
    sim: &ClioSim,
    region: Region,
    app: &AppSpec,
    account: u32,
    user: i64,
) -> Tokens {
    let base = sim.base_url(region);
    sim.admin().register_app(region, app).await.unwrap();
    let url = authorize_url(&base, &app.client_id, REDIRECT, "st");
    let consent = sim
        .admin()
        .consent_in_account(&url, account, user, Decision::Allow)
        .await
        .unwrap();
    let code = consent.code.expect("approved");
    let (status, body) = token_request(
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

pub async fn connect(sim: &ClioSim, region: Region, permissions: &[&str]) -> Tokens {
    connect_as(sim, region, &app(permissions), 1).await
}

/// The usual opening: a default simulator and one US connection holding every permission,
/// with the US base URL.
pub async fn us_connected() -> (ClioSim, String, Tokens) {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, ALL).await;
    (sim, base, tokens)
}

/// An API answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET {base}{path}` with the token; `path` includes `/api/v4` and the query.
pub async fn get(base: &str, token: &str, path: &str) -> Answer {
    get_with(base, token, path, &[]).await
}

pub async fn get_with(base: &str, token: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = http().get(format!("{base}{path}")).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.unwrap()).await
}

pub async fn get_url(token: &str, url: &str) -> Answer {
    answer(http().get(url).bearer_auth(token).send().await.unwrap()).await
}

pub async fn send_json(request: reqwest::RequestBuilder, token: &str, body: &Value) -> Answer {
    answer(request.bearer_auth(token).json(body).send().await.unwrap()).await
}

/// Follows `meta.paging.next` from `path`, returning every record.
pub async fn all_pages(base: &str, token: &str, path: &str) -> (Vec<Value>, usize) {
    let mut records = Vec::new();
    let mut pages = 0;
    let mut page = get(base, token, path).await;
    loop {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        records.extend(page.body["data"].as_array().unwrap().iter().cloned());
        match page.body["meta"]["paging"]["next"].as_str() {
            Some(next) => page = get_url(token, next).await,
            None => return (records, pages),
        }
    }
}

/// The error type of a typed API error body.
pub fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or_default()
}

/// The form of a refresh with the test app's credentials.
pub fn refresh_form(refresh: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
    ]
}
