//! What a simulator instance looks like: regions, data set, limits and token lifetimes.
//!
//! Everything is plain data built in memory, so tests state the exact Clio behaviour they
//! depend on instead of inheriting it from the environment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Clio Manage region: the client's own enum, so a region means the same thing on both
/// sides. Each region is a separate silo with its own listener, developer apps, grants and
/// data, as in production (`app.clio.com`, `eu.app.clio.com`, ...).
pub use clio_api::Region;

/// A region's position in [`Region::ALL`]: its port offset from `--base-port` and its
/// share of the seed, so each region's data differs.
pub(crate) fn region_index(region: Region) -> u64 {
    Region::ALL
        .iter()
        .position(|r| *r == region)
        .and_then(|i| u64::try_from(i).ok())
        .unwrap_or(0)
}

/// How many generated records each resource has in every region. Records are produced on
/// demand from the seed, so a million costs no memory until edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSize {
    pub users: u64,
    pub contacts: u64,
    pub matters: u64,
    pub calendar_entries: u64,
    pub activities: u64,
}

impl DatasetSize {
    /// The same count for every resource.
    pub fn uniform(count: u64) -> DatasetSize {
        DatasetSize {
            users: count,
            contacts: count,
            matters: count,
            calendar_entries: count,
            activities: count,
        }
    }
}

impl Default for DatasetSize {
    /// Small enough to page through in a unit test, big enough for several pages at low
    /// limits and for every kind of link (clients, matters, calendar entries) to occur.
    fn default() -> Self {
        DatasetSize {
            users: 5,
            contacts: 50,
            matters: 20,
            calendar_entries: 30,
            activities: 60,
        }
    }
}

/// A fixed-window request limit (per access token, or per app for `app_rate_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    #[serde(with = "crate::duration_ms", rename = "window_ms")]
    pub window: Duration,
}

impl RateLimit {
    /// Clio's documented peak-hour limit: 50 requests per minute per token.
    pub fn clio_default() -> RateLimit {
        RateLimit {
            limit: 50,
            window: Duration::from_secs(60),
        }
    }
}

/// How Clio treats a webhook subscription once its `expires_at` has passed. Clio documents
/// that subscriptions expire but not what the API shows afterwards, so receivers must cope
/// with both readings and tests choose one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiredWebhooks {
    /// Gone: `GET` and `PATCH` answer 404 and listings leave it out, so a receiver must
    /// create a new one. The stricter reading, hence the default.
    #[default]
    Removed,
    /// Still listed with its past `expires_at` (and its last status); it delivers nothing,
    /// and a `PATCH` with a new `expires_at` revives it.
    Listed,
}

/// Webhook subscriptions and deliveries (see `docs/clio-webhooks.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Also accept `http://` URLs on loopback (`127.0.0.1`, `[::1]`, `localhost`): Clio
    /// takes `https` only, but test receivers listen on plain HTTP. Other hosts still need
    /// `https`.
    pub allow_http: bool,
    /// Waits before the 2nd, 3rd, ... attempt of a delivery the receiver did not take (on
    /// real time, like rate-limit windows). Clio: 2 minutes, doubling, 5 re-attempts.
    pub retry_delays: Vec<Duration>,
    /// How long an attempt (and the handshake) may take before it counts as failed. Clio
    /// publishes no figure.
    pub delivery_timeout: Duration,
    /// A subscription whose deliveries failed (every attempt) this many times in a row is
    /// `suspended`. Clio says a webhook that keeps failing is eventually suspended, not
    /// after how many; this is our choice.
    pub suspend_after_failures: u32,
    pub expired: ExpiredWebhooks,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_http: false,
            retry_delays: [2, 4, 8, 16, 32]
                .map(|minutes| Duration::from_secs(minutes * 60))
                .to_vec(),
            delivery_timeout: Duration::from_secs(10),
            suspend_after_failures: 3,
            expired: ExpiredWebhooks::Removed,
        }
    }
}

/// Everything a simulator instance is started with.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Regions to serve; each gets its own listener.
    pub regions: Vec<Region>,
    /// Seed of the generated data (and of seeded fault fractions).
    pub seed: u64,
    pub dataset: DatasetSize,
    /// Clio accounts (firms) in every region, each with its own account id, users and
    /// records (all of `dataset`'s sizes, generated from their own seed). Account 1 is the
    /// region's usual firm, the one the admin record endpoints edit; a consent names the
    /// account its user belongs to (default 1) and that grant's tokens see only that
    /// account's records. Many accounts let a benchmark import many firms at once without
    /// two connections writing the same rows.
    pub accounts: u32,
    /// `None` switches the limiter off; responses then carry no `X-RateLimit-*` headers.
    pub rate_limit: Option<RateLimit>,
    /// A limit on one application as a whole: every request made with any token of one
    /// `client_id` in one region counts towards one fixed window. Past it: `429` with
    /// `Retry-After`, like the per-token limit. `None` (the default) switches it off; the
    /// busiest window of each app is measured either way.
    pub app_rate_limit: Option<RateLimit>,
    /// The `expires_in` handed out with access tokens (Clio documents 30 days).
    pub access_token_ttl: Duration,
    /// Issue a new refresh token on every refresh and invalidate the old one. Clio does not
    /// normally rotate, but some apps report it, so clients must cope with both.
    pub rotate_refresh_tokens: bool,
    /// Lifetime of an authorization code (Clio: about ten minutes), on the simulated clock.
    pub code_ttl: Duration,
    /// Extra delay before answering every list request, to make jobs observable mid-way.
    pub page_delay: Option<Duration>,
    /// `<title>` of the out-of-band approval page after approval. `{code}` and `{state}`
    /// are replaced. Clio's exact text is unconfirmed, so tests can vary it.
    pub approval_success_title: String,
    pub webhooks: WebhookConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            regions: Region::ALL.to_vec(),
            seed: 1,
            dataset: DatasetSize::default(),
            accounts: 1,
            rate_limit: Some(RateLimit::clio_default()),
            app_rate_limit: None,
            access_token_ttl: Duration::from_secs(30 * 24 * 3600),
            rotate_refresh_tokens: false,
            code_ttl: Duration::from_secs(600),
            page_delay: None,
            approval_success_title: DEFAULT_SUCCESS_TITLE.to_owned(),
            webhooks: WebhookConfig::default(),
        }
    }
}

/// Default out-of-band approval page title.
pub const DEFAULT_SUCCESS_TITLE: &str = "Success code={code}";
