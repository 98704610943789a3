//! Counting what clients did: token-endpoint grants, deauthorizations and API calls per
//! access token and endpoint, so tests can assert how a client behaved (how many pages,
//! how many refreshes, whether it ever outran the rate limit).
//!
//! Tokens are never stored here, only a short hash of them ([`token_id`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Region;

/// The short, stable hash under which calls made with `access_token` are counted.
pub fn token_id(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The key under which one app's calls in one region are counted: `"{region}/{client_id}"`.
pub fn app_key(region: Region, client_id: &str) -> String {
    format!("{region}/{client_id}")
}

/// Token-endpoint calls, all regions together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCalls {
    /// Successful code exchanges.
    pub authorization_code: u64,
    /// Successful refreshes.
    pub refresh_token: u64,
    /// Token requests answered with an error.
    pub errors: u64,
}

/// API calls of one token on one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCalls {
    pub region: Region,
    /// [`token_id`] of the bearer token presented (`"none"` without one).
    pub token_id: String,
    /// HTTP method (`GET`, `PATCH`, `POST`).
    pub method: String,
    /// Endpoint template: `/api/v4/contacts`, `/api/v4/contacts/{id}`,
    /// `/api/v4/users/who_am_i` (`.json` and ids removed).
    pub endpoint: String,
    pub count: u64,
    /// How many of those were answered 429.
    pub status_429: u64,
}

/// Everything counted since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub token: TokenCalls,
    pub deauthorize: u64,
    pub api: Vec<ApiCalls>,
    /// Per [`token_id`]: the most requests one rate-limit window of that token saw.
    pub max_in_window: BTreeMap<String, u64>,
    /// Successful refreshes per grant (`"{region}/{n}"`, the region's n-th approval): a
    /// grant is one connection of one client, so this tells how often each connection
    /// was refreshed.
    #[serde(default)]
    pub refreshes_by_grant: BTreeMap<String, u64>,
    /// Per app ([`app_key`]): the most requests one window of the per-app limit saw,
    /// counting every token of the app (measured over 60 s when no app limit is set).
    #[serde(default)]
    pub app_max_in_window: BTreeMap<String, u64>,
    /// Per app ([`app_key`]): the 429s answered because the app as a whole was over
    /// `SimConfig::app_rate_limit` (those are in `api[].status_429` too).
    #[serde(default)]
    pub app_limit_429: BTreeMap<String, u64>,
}

impl CallCounts {
    /// All API calls made with `access_token` (any endpoint, any outcome).
    pub fn api_calls_for(&self, access_token: &str) -> u64 {
        let id = token_id(access_token);
        self.api
            .iter()
            .filter(|calls| calls.token_id == id)
            .map(|calls| calls.count)
            .sum()
    }

    /// API calls made with `access_token` on one endpoint template.
    pub fn api_calls_on(&self, access_token: &str, endpoint: &str) -> u64 {
        let id = token_id(access_token);
        self.api
            .iter()
            .filter(|calls| calls.token_id == id && calls.endpoint == endpoint)
            .map(|calls| calls.count)
            .sum()
    }

    /// 429s answered to `access_token`.
    pub fn status_429_for(&self, access_token: &str) -> u64 {
        let id = token_id(access_token);
        self.api
            .iter()
            .filter(|calls| calls.token_id == id)
            .map(|calls| calls.status_429)
            .sum()
    }

    /// The most requests one rate-limit window of `access_token` saw.
    pub fn max_in_window_for(&self, access_token: &str) -> u64 {
        self.max_in_window
            .get(&token_id(access_token))
            .copied()
            .unwrap_or(0)
    }

    /// API calls by everyone.
    pub fn total_api_calls(&self) -> u64 {
        self.api.iter().map(|calls| calls.count).sum()
    }

    /// The most requests one window of the per-app limit saw from app `client_id` in
    /// `region` (all its tokens together).
    pub fn app_max_in_window_for(&self, region: Region, client_id: &str) -> u64 {
        self.app_max_in_window
            .get(&app_key(region, client_id))
            .copied()
            .unwrap_or(0)
    }

    /// 429s answered to app `client_id` in `region` because of the per-app limit.
    pub fn app_limit_429_for(&self, region: Region, client_id: &str) -> u64 {
        self.app_limit_429
            .get(&app_key(region, client_id))
            .copied()
            .unwrap_or(0)
    }

    /// The most refreshes any one grant had (0 when none was refreshed).
    pub fn most_refreshes_of_one_grant(&self) -> u64 {
        self.refreshes_by_grant.values().copied().max().unwrap_or(0)
    }
}

type ApiKey = (Region, String, String, String);

#[derive(Debug, Default)]
struct Inner {
    token: TokenCalls,
    deauthorize: u64,
    api: HashMap<ApiKey, (u64, u64)>,
    refreshes_by_grant: BTreeMap<String, u64>,
    app_limit_429: BTreeMap<String, u64>,
}

/// The shared counters behind `GET /__sim/calls`.
#[derive(Debug, Default)]
pub(crate) struct CallLog {
    inner: Mutex<Inner>,
}

/// What a token-endpoint request turned out to be.
#[derive(Clone, Debug)]
pub(crate) enum TokenOutcome {
    Code,
    /// A refresh of this grant (`"{region}/{n}"`).
    Refresh {
        grant: String,
    },
    Error,
}

impl CallLog {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn token(&self, outcome: TokenOutcome) {
        let mut inner = self.lock();
        match outcome {
            TokenOutcome::Code => inner.token.authorization_code += 1,
            TokenOutcome::Refresh { grant } => {
                inner.token.refresh_token += 1;
                *inner.refreshes_by_grant.entry(grant).or_default() += 1;
            }
            TokenOutcome::Error => inner.token.errors += 1,
        }
    }

    pub(crate) fn deauthorize(&self) {
        self.lock().deauthorize += 1;
    }

    pub(crate) fn api(
        &self,
        region: Region,
        token_id: String,
        method: &str,
        endpoint: String,
        status: u16,
    ) {
        let mut inner = self.lock();
        let entry = inner
            .api
            .entry((region, token_id, method.to_owned(), endpoint))
            .or_default();
        entry.0 += 1;
        if status == 429 {
            entry.1 += 1;
        }
    }

    /// A 429 answered because app `client_id` was over its limit in `region`.
    pub(crate) fn app_limited(&self, region: Region, client_id: &str) {
        *self
            .lock()
            .app_limit_429
            .entry(app_key(region, client_id))
            .or_default() += 1;
    }

    pub(crate) fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// The counters, API calls sorted for stable output; `max_in_window` and
    /// `app_max_in_window` are filled in by the caller from the rate limiters.
    pub(crate) fn snapshot(&self) -> CallCounts {
        let inner = self.lock();
        let mut api: Vec<ApiCalls> = inner
            .api
            .iter()
            .map(
                |((region, token_id, method, endpoint), (count, status_429))| ApiCalls {
                    region: *region,
                    token_id: token_id.clone(),
                    method: method.clone(),
                    endpoint: endpoint.clone(),
                    count: *count,
                    status_429: *status_429,
                },
            )
            .collect();
        api.sort_by(|a, b| {
            (a.region, &a.token_id, &a.endpoint, &a.method).cmp(&(
                b.region,
                &b.token_id,
                &b.endpoint,
                &b.method,
            ))
        });
        CallCounts {
            token: inner.token.clone(),
            deauthorize: inner.deauthorize,
            api,
            max_in_window: BTreeMap::new(),
            refreshes_by_grant: inner.refreshes_by_grant.clone(),
            app_max_in_window: BTreeMap::new(),
            app_limit_429: inner.app_limit_429.clone(),
        }
    }
}
