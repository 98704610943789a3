//! Fetching one page of a Clio list, within the token's rate limit, with retries.
//!
//! Transient failures (5xx, timeouts, dropped connections) back off with jitter and retry
//! up to a bound; a 429 honours `Retry-After` for everyone using the token; a 401 is
//! returned to the caller, which re-leases the token once. A `next` link pointing at any
//! host other than the connection's region is refused: a token is only ever sent to its
//! own region.
//!
//! Clio's answers are input we do not control. Redirects are not followed (a 3xx fails
//! the job, naming the status), a body is read in chunks up to `importer.max_page_bytes`
//! and no further, and each record of a page is checked on its own
//! ([`super::record_check`]): one Postgres cannot hold is skipped with its reason while the
//! rest of the page is stored. Clio's error messages are shortened and escaped before they
//! become a job's failure reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::rate_gate::RateGate;
use super::record_check::{self, PageText, SkippedRecord};
use crate::config::ImporterConfig;
use crate::job::spec::printable;

/// The Clio API version this importer is written against.
pub const API_VERSION: &str = "4.0.13";

/// Longest single wait for a 429 or a backoff, whatever the server says.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// 429s in a row before the job gives up (a storm that never ends).
const MAX_RATE_LIMITED: u32 = 50;
/// Most of an error answer read for its message, and most of the message kept.
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

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
    #[error(
        "Clio's answer is larger than importer.max_page_bytes ({limit} bytes); not read further"
    )]
    TooLarge { limit: u64 },
    #[error("cancelled")]
    Cancelled,
}

/// One page of records.
#[derive(Debug)]
pub struct Page {
    /// The records to store, in Clio's order.
    pub records: Vec<serde_json::Value>,
    /// The records left out of `records`, and why ([`record_check`]).
    pub skipped: Vec<SkippedRecord>,
    pub next: Option<Url>,
    /// Clio's count of all records for the query, when it gives one.
    pub total: Option<u64>,
    /// Clio's clock when it answered (the `Date` header), when it sent one.
    pub server_date: Option<DateTime<Utc>>,
}

/// A page with each record still raw text, so one bad record does not sink the page.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
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
            // Clio does not redirect API calls; following one would send the token (same
            // origin) or the request (any origin) somewhere the region check never saw.
            .redirect(reqwest::redirect::Policy::none())
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
                    let server_date = header_date(headers);
                    gate.observe(
                        header_u64(headers, "x-ratelimit-remaining").map(clamp_u32),
                        header_u64(headers, "x-ratelimit-reset"),
                    );
                    let status = response.status().as_u16();
                    match status {
                        200 => {
                            let limit = self.config.max_page_bytes;
                            let bytes = match read_body(response, limit).await {
                                Ok(bytes) => bytes,
                                Err(BodyError::TooLarge) => {
                                    return Err(FetchError::TooLarge { limit });
                                }
                                Err(BodyError::Transport(error)) => {
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
                            return parse_page(&bytes, self.config.max_record_bytes).map(|page| {
                                Page {
                                    server_date,
                                    ..page
                                }
                            });
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
                        300..=399 => {
                            let location = response
                                .headers()
                                .get(reqwest::header::LOCATION)
                                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                                .unwrap_or_default();
                            return Err(FetchError::Rejected {
                                status,
                                message: format!(
                                    "redirect to {:?} not followed",
                                    printable(&location, 200)
                                ),
                            });
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

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body, chunk by chunk, refusing it as soon as it passes `limit` bytes.
async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(BodyError::TooLarge);
    }
    let expected = response.content_length().unwrap_or(0).min(limit);
    let mut body = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A page: the envelope strictly, each record on its own ([`record_check`]).
fn parse_page(bytes: &[u8], max_record_bytes: usize) -> Result<Page, FetchError> {
    let page_text = PageText::new(bytes);
    let envelope: Envelope =
        serde_json::from_str(&page_text.text).map_err(|e| FetchError::Malformed(e.to_string()))?;
    let mut records = Vec::with_capacity(envelope.data.len());
    let mut skipped = Vec::new();
    for raw in envelope.data {
        let text = raw.get();
        if page_text.has_replacement(text) {
            skipped.push(SkippedRecord::new(None, "holds bytes that are not UTF-8"));
            continue;
        }
        match record_check::check(text, max_record_bytes) {
            Ok(record) => records.push(record),
            Err(skip) => skipped.push(skip),
        }
    }
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
        records,
        skipped,
        next,
        total: meta.and_then(|m| m.records),
        server_date: None,
    })
}

/// Clio's error message, without echoing anything we sent; read only in part, and
/// printable (it becomes the job's failure reason).
async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = read_body(response, MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/error_description"))
            .or_else(|| v.pointer("/error"))
            .and_then(|m| m.as_str().map(str::to_owned))
    });
    printable(
        &message.unwrap_or_else(|| status.to_string()),
        MAX_ERROR_MESSAGE_CHARS,
    )
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

/// An HTTP-date header (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn header_date(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|t| t.to_utc())
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
        let page = parse_page(br#"{"data":[{"id":1}],"meta":{"paging":{"next":"http://h/x?page_token=a"},"records":7}}"#, MAX).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.total, Some(7));
        assert!(page.next.is_some());
        let last = parse_page(br#"{"data":[],"meta":{"paging":{}}}"#, MAX).unwrap();
        assert!(last.next.is_none());
        assert!(parse_page(br#"{"data":{"id":1}}"#, MAX).is_err());
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn hostile_records_are_skipped_and_the_rest_of_the_page_kept() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let mut body = format!(
            r#"{{"data":[{{"id":1,"name":"good"}},{{"id":2,"name":"a\u0000b"}},{{"id":3,"name":"\ud800"}},{{"id":4,"x":{deep}}},{{"id":5,"big":"{}"}},{{"id":6,"name":"bad:?"}},{{"id":7,"name":"also good \ud83d\ude00"}}],"meta":{{"paging":{{}}}}}}"#,
            "x".repeat(2_000)
        )
        .into_bytes();
        // A byte that is not UTF-8 in record 6.
        let at = body.windows(5).position(|w| w == b"bad:?").unwrap() + 4;
        body[at] = 0xff;
        let page = parse_page(&body, 1_000).unwrap();
        let ids: Vec<_> = page.records.iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids, [1, 7]);
        assert_eq!(page.records[1]["name"], "also good 😀");
        let skipped: Vec<_> = page
            .skipped
            .iter()
            .map(|s| (s.id_text(), s.reason.clone()))
            .collect();
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        let reason_of = |i: usize| &skipped[i].1;
        assert_eq!(skipped[0].0.as_deref(), Some("2"));
        assert!(reason_of(0).contains("NUL"), "{skipped:?}");
        assert_eq!(skipped[1].0.as_deref(), Some("3"));
        assert!(reason_of(1).contains("hex escape"), "{skipped:?}");
        assert_eq!(skipped[2].0.as_deref(), Some("4"));
        assert!(reason_of(2).contains("recursion limit"), "{skipped:?}");
        assert_eq!(skipped[3].0.as_deref(), Some("5"));
        assert!(reason_of(3).contains("max_record_bytes"), "{skipped:?}");
        assert!(reason_of(4).contains("not UTF-8"), "{skipped:?}");
    }
}
