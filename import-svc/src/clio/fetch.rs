//! Fetching one page of a Clio list, within the token's rate limit, with retries.
//!
//! Transient failures (5xx, timeouts, dropped connections) back off with jitter and retry
//! up to a bound; a 429 honours `Retry-After` for everyone using the token; a 401 is
//! returned to the caller, which re-leases the token once. A `next` link pointing at any
//! host other than the connection's region is refused: a token is only ever sent to its
//! own region.

use std::time::Duration;

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::rate_gate::RateGate;
use crate::config::ImporterConfig;

/// The Clio API version this importer is written against.
pub const API_VERSION: &str = "4.0.13";

/// Longest single wait for a 429 or a backoff, whatever the server says.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// 429s in a row before the job gives up (a storm that never ends).
const MAX_RATE_LIMITED: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("Clio rejected the access token (401)")]
    Unauthorized,
    #[error("Clio refused access (403): {0}")]
    Forbidden(String),
    #[error("Clio refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("Clio kept failing after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("Clio answered something that is not a list page: {0}")]
    Malformed(String),
    #[error("refusing to send the token to {0}: not the connection's region")]
    ForeignHost(String),
    #[error("cancelled")]
    Cancelled,
}

/// One page of records.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<serde_json::Value>,
    pub next: Option<Url>,
    /// Clio's count of all records for the query, when it gives one.
    pub total: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    paging: Option<Paging>,
    #[serde(default)]
    records: Option<u64>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

/// Reports time spent waiting, so progress can show rate-limit waits.
pub trait WaitObserver: Send + Sync {
    fn waited(&self, wait: Duration);
}

#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    config: ImporterConfig,
}

impl Fetcher {
    pub fn new(config: ImporterConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Fetcher { http, config })
    }

    /// GETs `url` with `token`, whose only allowed host is `api_base`'s.
    pub async fn page(
        &self,
        url: &Url,
        api_base: &Url,
        token: &SecretString,
        gate: &RateGate,
        cancel: &CancellationToken,
        observer: &dyn WaitObserver,
    ) -> Result<Page, FetchError> {
        if url.origin() != api_base.origin() {
            return Err(FetchError::ForeignHost(url.origin().ascii_serialization()));
        }
        let mut attempts = 0;
        let mut rate_limited = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(FetchError::Cancelled);
            }
            let waited = tokio::select! {
                waited = gate.acquire(self.config.rate_limit_reserve) => waited,
                () = cancel.cancelled() => return Err(FetchError::Cancelled),
            };
            if !waited.is_zero() {
                observer.waited(waited);
            }
            let outcome = self
                .http
                .get(url.clone())
                .bearer_auth(token.expose_secret())
                .header("X-API-VERSION", API_VERSION)
                .send()
                .await;
            let failure = match outcome {
                Err(error) => describe_transport_error(&error),
                Ok(response) => {
                    let headers = response.headers();
                    gate.observe(
                        header_u64(headers, "x-ratelimit-remaining").map(clamp_u32),
                        header_u64(headers, "x-ratelimit-reset"),
                    );
                    let status = response.status().as_u16();
                    match status {
                        200 => {
                            let bytes = match response.bytes().await {
                                Ok(bytes) => bytes,
                                Err(error) => {
                                    attempts += 1;
                                    self.retry_or_fail(
                                        attempts,
                                        describe_transport_error(&error),
                                        cancel,
                                        observer,
                                    )
                                    .await?;
                                    continue;
                                }
                            };
                            return parse_page(&bytes);
                        }
                        429 => {
                            rate_limited += 1;
                            if rate_limited > MAX_RATE_LIMITED {
                                return Err(FetchError::Exhausted {
                                    attempts: rate_limited,
                                    last: "429 Too Many Requests".into(),
                                });
                            }
                            let retry_after = header_u64(response.headers(), "retry-after")
                                .map(Duration::from_secs)
                                .unwrap_or(Duration::from_secs(1))
                                .min(MAX_WAIT);
                            tracing::info!(
                                retry_after_ms = retry_after.as_millis() as u64,
                                "clio rate limited the token"
                            );
                            gate.block_for(retry_after).await;
                            continue;
                        }
                        401 => return Err(FetchError::Unauthorized),
                        403 => return Err(FetchError::Forbidden(error_message(response).await)),
                        500..=599 => format!("HTTP {status}"),
                        _ => {
                            return Err(FetchError::Rejected {
                                status,
                                message: error_message(response).await,
                            });
                        }
                    }
                }
            };
            attempts += 1;
            self.retry_or_fail(attempts, failure, cancel, observer)
                .await?;
        }
    }

    /// Backs off before the next attempt, or gives up after the configured attempts.
    async fn retry_or_fail(
        &self,
        attempts: u32,
        failure: String,
        cancel: &CancellationToken,
        observer: &dyn WaitObserver,
    ) -> Result<(), FetchError> {
        if attempts >= self.config.max_page_attempts {
            return Err(FetchError::Exhausted {
                attempts,
                last: failure,
            });
        }
        let delay = backoff(self.config.backoff_base_ms, attempts);
        tracing::warn!(attempts, delay_ms = delay.as_millis() as u64, failure = %failure, "clio request failed; retrying");
        observer.waited(delay);
        tokio::select! {
            () = cancel.cancelled() => Err(FetchError::Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Exponential backoff with full jitter: `base * 2^(attempt-1)`, capped, times [0.5, 1).
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(30_000);
    let jittered = rand::thread_rng().gen_range(capped / 2..=capped.max(1));
    Duration::from_millis(jittered).min(MAX_WAIT)
}

fn parse_page(bytes: &[u8]) -> Result<Page, FetchError> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| FetchError::Malformed(e.to_string()))?;
    let meta = envelope.meta;
    let next = match meta
        .as_ref()
        .and_then(|m| m.paging.as_ref())
        .and_then(|p| p.next.as_deref())
    {
        None | Some("") => None,
        Some(link) => {
            Some(Url::parse(link).map_err(|e| FetchError::Malformed(format!("paging.next: {e}")))?)
        }
    };
    Ok(Page {
        records: envelope.data,
        next,
        total: meta.and_then(|m| m.records),
    })
}

/// Clio's error message, without echoing anything we sent.
async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/error_description"))
            .or_else(|| v.pointer("/error"))
            .and_then(|m| m.as_str().map(str::to_owned))
    });
    message.unwrap_or_else(|| status.to_string())
}

fn describe_transport_error(error: &reqwest::Error) -> String {
    // reqwest errors can carry the URL; ours holds no secret (the token is a header), but
    // keep the message to its kind anyway.
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "could not connect".into()
    } else if error.is_body() || error.is_decode() {
        "connection dropped while reading the response".into()
    } else {
        "connection failed".into()
    }
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn clamp_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(200, 1) <= Duration::from_millis(200));
        assert!(backoff(200, 3) >= Duration::from_millis(400));
        assert!(backoff(200, 40) <= Duration::from_secs(30));
    }

    #[test]
    fn pages_parse_with_and_without_next() {
        let page = parse_page(br#"{"data":[{"id":1}],"meta":{"paging":{"next":"http://h/x?page_token=a"},"records":7}}"#).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.total, Some(7));
        assert!(page.next.is_some());
        let last = parse_page(br#"{"data":[],"meta":{"paging":{}}}"#).unwrap();
        assert!(last.next.is_none());
        assert!(parse_page(br#"{"data":{"id":1}}"#).is_err());
    }
}
