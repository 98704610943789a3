//! Everything one region owns, and what all regions share.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use crate::apps::AppSpec;
use crate::calls::{CallCounts, CallLog};
use crate::clock::SimClock;
use crate::config::{Region, SimConfig};
use crate::dataset::Dataset;
use crate::faults::FaultSet;
use crate::oauth::store::{Bearer, OAuthStore};
use crate::ratelimit::RateLimiter;
use crate::resource::Resource;
use crate::webhooks::Webhooks;

/// State common to every region: configuration, the simulated clock and the call log.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) clock: SimClock,
    pub(crate) calls: CallLog,
    limiters: Vec<Arc<RateLimiter>>,
    /// Each region's per-app limiter, keyed by `client_id`.
    app_limiters: Vec<(Region, Arc<RateLimiter>)>,
}

impl Shared {
    /// The call counters with every region's burst maxima.
    pub(crate) fn call_counts(&self) -> CallCounts {
        let mut counts = self.calls.snapshot();
        for limiter in &self.limiters {
            counts.max_in_window.extend(limiter.max_in_window());
        }
        for (region, limiter) in &self.app_limiters {
            counts.app_max_in_window.extend(
                limiter
                    .max_in_window()
                    .into_iter()
                    .map(|(client_id, max)| (crate::calls::app_key(*region, &client_id), max)),
            );
        }
        counts
    }

    pub(crate) fn reset_calls(&self) {
        self.calls.reset();
        let app_limiters = self.app_limiters.iter().map(|(_, limiter)| limiter);
        for limiter in self.limiters.iter().chain(app_limiters) {
            limiter.reset_max();
        }
    }
}

/// One Clio silo: its apps, grants and tokens, data, faults and rate limiter.
#[derive(Debug)]
pub(crate) struct RegionState {
    pub(crate) region: Region,
    pub(crate) shared: Arc<Shared>,
    pub(crate) apps: RwLock<HashMap<String, AppSpec>>,
    pub(crate) oauth: OAuthStore,
    /// Account 1's records: the region's usual firm, which the admin API edits.
    pub(crate) data: Dataset,
    /// Accounts 2 and on (`SimConfig::accounts`), read through their grants' tokens.
    more_accounts: Vec<Dataset>,
    pub(crate) faults: FaultSet,
    pub(crate) limiter: Arc<RateLimiter>,
    /// The per-app limit (`SimConfig::app_rate_limit`), keyed by `client_id`.
    pub(crate) app_limiter: Arc<RateLimiter>,
    pub(crate) webhooks: Webhooks,
    /// Records a user may not see (by user key and resource: record keys), as Clio hides
    /// restricted matters and contacts from users without access to them.
    hidden: RwLock<HashMap<(i64, Resource), BTreeSet<i64>>>,
}

/// Builds the shared state and one state per configured region.
pub(crate) fn build(config: SimConfig) -> (Arc<Shared>, Vec<Arc<RegionState>>) {
    let limiters: Vec<_> = config
        .regions
        .iter()
        .map(|_| Arc::new(RateLimiter::new(config.rate_limit)))
        .collect();
    let app_limiters: Vec<_> = config
        .regions
        .iter()
        .map(|region| (*region, Arc::new(RateLimiter::new(config.app_rate_limit))))
        .collect();
    let shared = Arc::new(Shared {
        config: config.clone(),
        clock: SimClock::default(),
        calls: CallLog::default(),
        limiters: limiters.clone(),
        app_limiters: app_limiters.clone(),
    });
    let regions = config
        .regions
        .iter()
        .zip(limiters)
        .zip(app_limiters)
        .map(|((region, limiter), (_, app_limiter))| {
            Arc::new(RegionState {
                region: *region,
                shared: shared.clone(),
                apps: RwLock::default(),
                oauth: OAuthStore::default(),
                data: Dataset::new(config.seed, *region, 1, config.dataset),
                more_accounts: (2..=config.accounts)
                    .map(|account| Dataset::new(config.seed, *region, account, config.dataset))
                    .collect(),
                faults: FaultSet::new(config.seed ^ crate::config::region_index(*region)),
                limiter,
                app_limiter,
                webhooks: Webhooks::new(shared.clone()),
                hidden: RwLock::default(),
            })
        })
        .collect();
    (shared, regions)
}

impl RegionState {
    pub(crate) fn app(&self, client_id: &str) -> Option<AppSpec> {
        self.apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client_id)
            .cloned()
    }

    pub(crate) fn register_app(&self, app: AppSpec) {
        self.apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(app.client_id.clone(), app);
    }

    /// The records of `account` (1-based), if the region has that account.
    pub(crate) fn account(&self, account: u32) -> Option<&Dataset> {
        match account {
            1 => Some(&self.data),
            n => self
                .more_accounts
                .get(usize::try_from(n).ok()?.checked_sub(2)?),
        }
    }

    /// The user a consent or revoke names in `account`: a user id of that account, or
    /// (for convenience in tests) the user's 1-based position among its generated users.
    pub(crate) fn resolve_user(&self, account: u32, user_id: i64) -> Option<i64> {
        let data = self.account(account)?;
        let position = Resource::Users.id_base().checked_add(user_id);
        [Some(user_id), position]
            .into_iter()
            .flatten()
            .find(|key| data.get(Resource::Users, *key).is_some())
    }

    /// From now on, listings show `user_key` none of `keys` of `resource` (replacing what
    /// was hidden from that user before; empty shows everything again).
    pub(crate) fn hide(&self, user_key: i64, resource: Resource, keys: BTreeSet<i64>) {
        let mut hidden = self.hidden.write().unwrap_or_else(PoisonError::into_inner);
        if keys.is_empty() {
            hidden.remove(&(user_key, resource));
        } else {
            hidden.insert((user_key, resource), keys);
        }
    }

    /// The keys of `resource` hidden from `user_key`.
    pub(crate) fn hidden_from(&self, user_key: i64, resource: Resource) -> BTreeSet<i64> {
        self.hidden
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(user_key, resource))
            .cloned()
            .unwrap_or_default()
    }

    /// The grant behind an access token, applying a pending `revoke_after` fault.
    pub(crate) fn authenticate(&self, access_token: &str) -> Result<Bearer, &'static str> {
        let bearer = self
            .oauth
            .authenticate(access_token, self.shared.clock.now())?;
        if self.faults.revoke_now() {
            self.oauth.revoke_grant(bearer.grant);
            return Err("the access token has been revoked");
        }
        Ok(bearer)
    }
}
