//! Creating a record in Clio (`POST /api/v4/<resource>.json`), once per call.
//!
//! A create is not retried here: when Clio does not answer, it may still have created the
//! record, and only the caller knows how to look for it before trying again (a time entry
//! by its calendar entry link). So a timeout, a dropped connection or a 5xx is
//! [`ClioError::Transient`] and the caller decides; a 4xx is Clio refusing the record for
//! good ([`ClioError::Rejected`] with Clio's own message, say a validation error).

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use crate::app_budget::AppBudget;
use crate::client::{HttpSettings, http_client};
use crate::error::ClioError;
use crate::listing::{clamp_u32, error_message, header_u64, resource_url};
use crate::rate_gate::RateGate;
use crate::{host_pin, retry};

/// Largest answer to a create read (one record).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// One record to create, with the token and its rate gate.
pub struct CreateRequest<'a> {
    /// The resource's path name (`activities`).
    pub resource: &'a str,
    /// The record's fields (sent as `{"data": record}`).
    pub record: &'a Value,
    /// The fields of the created record to answer with (`fields`).
    pub fields: &'a str,
    /// The token's API base: the only origin `token` is ever sent to.
    pub api_base: &'a Url,
    pub token: &'a SecretString,
    pub gate: &'a RateGate,
    /// The app's budget across all its tokens, when it has one.
    pub budget: Option<&'a dyn AppBudget>,
    /// Requests kept in reserve below Clio's remaining count.
    pub reserve: u32,
}

/// Creates records in Clio. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Creator {
    http: reqwest::Client,
}

impl Creator {
    pub fn new(http: HttpSettings) -> Result<Self, ClioError> {
        Ok(Creator {
            http: http_client(http)?,
        })
    }

    /// POSTs the record once (after the token's rate gate lets it); the created record as
    /// Clio answers it (`data`).
    pub async fn create(&self, request: &CreateRequest<'_>) -> Result<Value, ClioError> {
        let mut url =
            resource_url(request.api_base, request.resource).map_err(|e| ClioError::Other {
                status: None,
                detail: format!("bad API base: {e}"),
            })?;
        url.query_pairs_mut().append_pair("fields", request.fields);
        host_pin::check_origin(&url, request.api_base)?;
        request.gate.acquire(request.reserve).await;
        if let Some(budget) = request.budget {
            budget.acquire().await;
        }
        let response = self
            .http
            .post(url)
            .bearer_auth(request.token.expose_secret())
            .header("X-API-VERSION", crate::API_VERSION)
            .json(&json!({ "data": request.record }))
            .send()
            .await
            .map_err(|e| ClioError::from_transport(&e))?;
        let headers = response.headers();
        request.gate.observe(
            header_u64(headers, "x-ratelimit-remaining").map(clamp_u32),
            header_u64(headers, "x-ratelimit-reset"),
        );
        let status = response.status();
        match status {
            StatusCode::OK | StatusCode::CREATED => created(response).await,
            StatusCode::UNAUTHORIZED => Err(ClioError::InvalidToken {
                description: "status 401".into(),
            }),
            StatusCode::FORBIDDEN => Err(ClioError::Forbidden {
                message: error_message(response).await,
            }),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = retry::retry_after(response.headers());
                if let Some(wait) = retry_after {
                    request.gate.block_for(wait.min(retry::MAX_WAIT)).await;
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
}

/// The `data` of a create's answer. A body that breaks off is a transport failure (the
/// record may exist); one that is not a record is Clio answering unexpectedly.
async fn created(response: reqwest::Response) -> Result<Value, ClioError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClioError::from_transport(&e))?;
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(ClioError::Other {
            status: None,
            detail: format!("the created record's answer is over {MAX_ANSWER_BYTES} bytes"),
        });
    }
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| ClioError::Other {
        status: None,
        detail: format!("the answer to a create is not JSON: {e}"),
    })?;
    match answer.get("data") {
        Some(record @ Value::Object(_)) => Ok(record.clone()),
        _ => Err(ClioError::Other {
            status: None,
            detail: "the answer to a create has no data object".into(),
        }),
    }
}
