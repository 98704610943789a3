//! One request to Clio that answers one object: creating a record, reading one by id,
//! managing a webhook subscription. Sent once, never retried here (the caller knows
//! whether trying again is safe), after the token's gate and the app's budget let it go;
//! the answer's status is sorted into a [`ClioError`] the same way for every such call.

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::app_budget::AppBudget;
use crate::error::ClioError;
use crate::listing::{clamp_u32, error_message, header_u64};
use crate::rate_gate::RateGate;
use crate::{host_pin, retry};

/// Largest answer read (one record, one subscription).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The token, where it may go, and what paces it.
pub struct Credentials<'a> {
    /// The token's API base: the only origin `token` is ever sent to.
    pub api_base: &'a Url,
    pub token: &'a SecretString,
    pub gate: &'a RateGate,
    /// The app's budget across all its tokens, when it has one.
    pub budget: Option<&'a dyn AppBudget>,
    /// Requests kept in reserve below Clio's remaining count.
    pub reserve: u32,
}

/// What one call answered: `Some(data)` for 200/201 with a `data` object, `None` for
/// 204 and, when `missing_is_none`, for 404.
pub(crate) async fn send(
    http: &reqwest::Client,
    credentials: &Credentials<'_>,
    method: Method,
    url: Url,
    body: Option<&Value>,
    missing_is_none: bool,
) -> Result<Option<Value>, ClioError> {
    host_pin::check_origin(&url, credentials.api_base)?;
    credentials.gate.acquire(credentials.reserve).await;
    if let Some(budget) = credentials.budget {
        budget.acquire().await;
    }
    let mut request = http
        .request(method, url)
        .bearer_auth(credentials.token.expose_secret())
        .header("X-API-VERSION", crate::API_VERSION);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ClioError::from_transport(&e))?;
    let headers = response.headers();
    credentials.gate.observe(
        header_u64(headers, "x-ratelimit-remaining").map(clamp_u32),
        header_u64(headers, "x-ratelimit-reset"),
    );
    match response.status() {
        StatusCode::OK | StatusCode::CREATED => data_object(response).await.map(Some),
        StatusCode::NO_CONTENT => Ok(None),
        StatusCode::NOT_FOUND if missing_is_none => Ok(None),
        StatusCode::UNAUTHORIZED => Err(ClioError::InvalidToken {
            description: "status 401".into(),
        }),
        StatusCode::FORBIDDEN => Err(ClioError::Forbidden {
            message: error_message(response).await,
        }),
        StatusCode::TOO_MANY_REQUESTS => {
            let retry_after = retry::retry_after(response.headers());
            if let Some(wait) = retry_after {
                credentials.gate.block_for(wait.min(retry::MAX_WAIT)).await;
            }
            Err(ClioError::RateLimited { retry_after })
        }
        status if status.is_server_error() => Err(ClioError::Transient {
            detail: format!("status {}", status.as_u16()),
        }),
        status => Err(ClioError::Rejected {
            status: status.as_u16(),
            message: error_message(response).await,
        }),
    }
}

/// The `data` object of an answer. A body that breaks off is a transport failure (a
/// create may have happened); one that is not an object is Clio answering unexpectedly.
async fn data_object(response: reqwest::Response) -> Result<Value, ClioError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClioError::from_transport(&e))?;
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(ClioError::Other {
            status: None,
            detail: format!("the answer is over {MAX_ANSWER_BYTES} bytes"),
        });
    }
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| ClioError::Other {
        status: None,
        detail: format!("the answer is not JSON: {e}"),
    })?;
    match answer.get("data") {
        Some(record @ Value::Object(_)) => Ok(record.clone()),
        _ => Err(ClioError::Other {
            status: None,
            detail: "the answer has no data object".into(),
        }),
    }
}

/// A path under the API base (`contacts/17`, `webhooks`), as `.json`.
pub(crate) fn api_url(api_base: &Url, path: &str) -> Result<Url, ClioError> {
    crate::listing::resource_url(api_base, path).map_err(|e| ClioError::Other {
        status: None,
        detail: format!("bad API base: {e}"),
    })
}
