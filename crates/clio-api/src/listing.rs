//! Reading a Clio list page by page, within the token's rate limit, with retries.
//!
//! A list starts at [`ListQuery::first_page_url`] (fields, page size, `updated_since`,
//! filters) and goes on through each page's `next` link ([`crate::paging`]). Transient
//! failures (5xx, timeouts, dropped connections) back off with jitter and retry up to a
//! bound ([`crate::retry`]); a 429 honours `Retry-After` for everyone using the token
//! ([`crate::rate_gate`]); a 401 is returned to the caller, which may get a fresh token
//! once. A URL on any host other than the token's region is refused ([`crate::host_pin`]).
//!
//! Clio's answers are input we do not control. Redirects are not followed (a 3xx is
//! [`ClioError::Rejected`], naming the status), a body is read in chunks up to
//! [`ListingSettings::max_page_bytes`] and no further, and each record of a page is checked
//! on its own ([`crate::record_check`]): one Postgres cannot hold is skipped with its
//! reason while the rest of the page is kept. Clio's error messages are shortened and
//! escaped before they become part of an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::app_budget::AppBudget;
use crate::client::{HttpSettings, http_client};
use crate::error::ClioError;
use crate::observer::{CallObserver, Endpoint, Observer};
use crate::paging::{Page, parse_page};
use crate::printable::printable;
use crate::rate_gate::RateGate;
use crate::{host_pin, retry};

/// 429s in a row before a page read gives up (a storm that never ends).
const MAX_RATE_LIMITED: u32 = 50;
/// The wait after a 429 that did not say how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most of an error answer read for its message, and most of the message kept.
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// List filters a caller may pass on. Clio silently ignores a misspelt filter and returns
/// everything, so anything else should be refused before it reaches Clio.
pub const FILTERS: &[&str] = &[
    "matter_id",
    "client_id",
    "status",
    "calendar_id",
    "from",
    "to",
    "query",
    "created_since",
];

/// What to list: the first page's URL is built from it, later pages follow Clio's links.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    /// The resource's path name (`contacts` for `/api/v4/contacts.json`).
    pub resource: &'a str,
    /// The `fields` parameter ([`crate::fields::fields_param`]).
    pub fields: &'a str,
    /// Records per page (`limit`; Clio allows 1–200).
    pub limit: u32,
    /// Only records updated since then (`updated_since`, in whole seconds, UTC).
    pub updated_since: Option<DateTime<Utc>>,
    /// Filters named in [`FILTERS`], with their values.
    pub filters: &'a BTreeMap<String, String>,
}

impl ListQuery<'_> {
    /// The first page under `api_base`, the token's region ([`crate::host_pin`]).
    pub fn first_page_url(&self, api_base: &Url) -> Result<Url, url::ParseError> {
        let mut url = resource_url(api_base, self.resource)?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("fields", self.fields);
            query.append_pair("limit", &self.limit.to_string());
            if let Some(since) = self.updated_since {
                query.append_pair(
                    "updated_since",
                    &since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
            for (key, value) in self.filters {
                query.append_pair(key, value);
            }
        }
        Ok(url)
    }
}

/// `{api base}/api/v4/{resource}.json`, whether the base already ends in `/api/v4` or not.
pub(crate) fn resource_url(api_base: &Url, resource: &str) -> Result<Url, url::ParseError> {
    let base = api_base.as_str().trim_end_matches('/');
    let base = if base.ends_with("/api/v4") {
        base.to_owned()
    } else {
        format!("{base}/api/v4")
    };
    Url::parse(&format!("{base}/{resource}.json"))
}

/// How a [`Lister`] reads pages.
#[derive(Debug, Clone, Copy)]
pub struct ListingSettings {
    /// Requests kept in reserve below Clio's remaining count, so concurrent callers of the
    /// same token never tip it over the limit.
    pub rate_limit_reserve: u32,
    /// Attempts at one page (5xx, timeouts, dropped connections) before
    /// [`ClioError::Exhausted`].
    pub max_page_attempts: u32,
    /// The first backoff after a transient failure ([`retry::backoff`]).
    pub backoff_base: Duration,
    /// Largest body read for one page; a larger one is [`ClioError::TooLarge`].
    pub max_page_bytes: u64,
    /// Largest record kept; a larger one is skipped ([`crate::record_check`]).
    pub max_record_bytes: usize,
}

/// Reports time spent waiting, so progress can show rate-limit waits.
pub trait WaitObserver: Send + Sync {
    fn waited(&self, wait: Duration);
}

/// One page to read, with the token and everything that paces it.
pub struct PageRequest<'a> {
    pub url: &'a Url,
    /// The token's API base: the only origin `token` is ever sent to.
    pub api_base: &'a Url,
    pub token: &'a SecretString,
    /// The token's gate ([`crate::RateGates`]), shared by everyone using the token.
    pub gate: &'a RateGate,
    /// The app's budget across all its tokens, when it has one: every request sent takes
    /// a place in it after the token's gate lets it go.
    pub budget: Option<&'a dyn AppBudget>,
    pub cancel: &'a CancellationToken,
    pub observer: &'a dyn WaitObserver,
}

/// Reads pages of Clio lists. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lister {
    http: reqwest::Client,
    settings: ListingSettings,
    observer: Observer,
}

/// What one answer from Clio means for the read.
enum Answer {
    Page(Page),
    /// A 429, waited out on the gate: send again (not an attempt).
    RateLimited,
    /// Worth another attempt; the failure, for the log and for [`ClioError::Exhausted`].
    Retry(String),
}

impl Lister {
    pub fn new(http: HttpSettings, settings: ListingSettings) -> Result<Self, ClioError> {
        Ok(Lister {
            http: http_client(http)?,
            settings,
            observer: Observer::default(),
        })
    }

    /// Reports every page request and rate-limit wait to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Observer::new(observer);
        self
    }

    /// GETs one page. [`ClioError::InvalidToken`] on a 401 (the caller may retry with a
    /// fresh token), [`ClioError::Exhausted`] when Clio kept failing, and
    /// [`ClioError::Cancelled`] as soon as `request.cancel` is.
    pub async fn page(&self, request: &PageRequest<'_>) -> Result<Page, ClioError> {
        host_pin::check_origin(request.url, request.api_base)?;
        let mut attempts = 0;
        let mut rate_limited = 0;
        loop {
            self.wait_turn(request).await?;
            let started = Instant::now();
            let sent = self
                .http
                .get(request.url.clone())
                .bearer_auth(request.token.expose_secret())
                .header("X-API-VERSION", crate::API_VERSION)
                .send()
                .await;
            self.observer.called(
                Endpoint::List(listed_resource(request.url)),
                sent.as_ref().ok().map(|r| r.status().as_u16()),
                started.elapsed(),
            );
            let failure = match sent {
                Err(error) => ClioError::transport_failure(&error).to_owned(),
                Ok(response) => match self.answer(response, request, &mut rate_limited).await? {
                    Answer::Page(page) => return Ok(page),
                    Answer::RateLimited => continue,
                    Answer::Retry(failure) => failure,
                },
            };
            attempts += 1;
            self.retry_or_fail(attempts, failure, request).await?;
        }
    }

    /// Waits for the token's gate (or cancellation), reporting any wait.
    async fn wait_turn(&self, request: &PageRequest<'_>) -> Result<(), ClioError> {
        if request.cancel.is_cancelled() {
            return Err(ClioError::Cancelled);
        }
        let mut waited = tokio::select! {
            waited = request.gate.acquire(self.settings.rate_limit_reserve) => waited,
            () = request.cancel.cancelled() => return Err(ClioError::Cancelled),
        };
        if let Some(budget) = request.budget {
            waited += tokio::select! {
                waited = budget.acquire() => waited,
                () = request.cancel.cancelled() => return Err(ClioError::Cancelled),
            };
        }
        if !waited.is_zero() {
            request.observer.waited(waited);
            self.observer.rate_limit_waited(waited);
        }
        Ok(())
    }

    /// Sorts one answer: a page, a 429 waited out, a failure worth retrying, or an error.
    async fn answer(
        &self,
        response: reqwest::Response,
        request: &PageRequest<'_>,
        rate_limited: &mut u32,
    ) -> Result<Answer, ClioError> {
        let headers = response.headers();
        let server_date = header_date(headers);
        request.gate.observe(
            header_u64(headers, "x-ratelimit-remaining").map(clamp_u32),
            header_u64(headers, "x-ratelimit-reset"),
        );
        let status = response.status().as_u16();
        match status {
            200 => self.read_page(response, server_date).await,
            429 => {
                *rate_limited += 1;
                if *rate_limited > MAX_RATE_LIMITED {
                    return Err(ClioError::Exhausted {
                        attempts: *rate_limited,
                        last: "429 Too Many Requests".into(),
                    });
                }
                let retry_after = retry::retry_after(response.headers())
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(retry::MAX_WAIT);
                tracing::info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "clio rate limited the token"
                );
                request.gate.block_for(retry_after).await;
                Ok(Answer::RateLimited)
            }
            300..=399 => Err(ClioError::Rejected {
                status,
                message: format!(
                    "redirect to {:?} not followed",
                    printable(&location(response.headers()), 200)
                ),
            }),
            401 => Err(ClioError::InvalidToken {
                description: "status 401".into(),
            }),
            403 => Err(ClioError::Forbidden {
                message: error_message(response).await,
            }),
            500..=599 => Ok(Answer::Retry(format!("HTTP {status}"))),
            _ => Err(ClioError::Rejected {
                status,
                message: error_message(response).await,
            }),
        }
    }

    /// A 200's body, read up to the page limit, as a page.
    async fn read_page(
        &self,
        response: reqwest::Response,
        server_date: Option<DateTime<Utc>>,
    ) -> Result<Answer, ClioError> {
        let limit = self.settings.max_page_bytes;
        let bytes = match read_body(response, limit).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => return Err(ClioError::TooLarge { limit }),
            Err(BodyError::Transport(error)) => {
                return Ok(Answer::Retry(
                    ClioError::transport_failure(&error).to_owned(),
                ));
            }
        };
        let page = parse_page(&bytes, self.settings.max_record_bytes)?;
        Ok(Answer::Page(Page {
            server_date,
            ..page
        }))
    }

    /// Backs off before the next attempt, or gives up after the configured attempts.
    async fn retry_or_fail(
        &self,
        attempts: u32,
        failure: String,
        request: &PageRequest<'_>,
    ) -> Result<(), ClioError> {
        if attempts >= self.settings.max_page_attempts {
            return Err(ClioError::Exhausted {
                attempts,
                last: failure,
            });
        }
        let delay = retry::backoff(self.settings.backoff_base, attempts);
        tracing::warn!(attempts, delay_ms = delay.as_millis() as u64, failure = %failure, "clio request failed; retrying");
        request.observer.waited(delay);
        tokio::select! {
            () = request.cancel.cancelled() => Err(ClioError::Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// The resource a page URL lists: its path's last segment without `.json`.
fn listed_resource(url: &Url) -> &str {
    let last = url.path_segments().and_then(|mut s| s.next_back());
    last.map_or("", |segment| segment.trim_end_matches(".json"))
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

/// Clio's error message, without echoing anything we sent; read only in part, and
/// printable (it may become a job's failure reason).
pub(crate) async fn error_message(response: reqwest::Response) -> String {
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

/// Where a redirect pointed, as sent (not necessarily UTF-8).
fn location(headers: &HeaderMap) -> String {
    headers
        .get(reqwest::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
        .unwrap_or_default()
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// An HTTP-date header (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn header_date(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|t| t.to_utc())
}

pub(crate) fn clamp_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
