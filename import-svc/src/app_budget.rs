//! Clio's limit on one application as a whole, shared by every replica and connection.
//!
//! Clio limits each token (the per-token gate, [`clio_api::RateGate`]) and also each
//! application across all its tokens. Hundreds of firms' connections of one app, spread
//! over several replicas, would each find the app's limit only by a 429. So every request
//! to Clio first takes a place in the app's budget, kept in Postgres where all replicas
//! see it: at most `requests` in any `window_secs` (a sliding window, so it holds whatever
//! instant Clio's own window starts at), with `margin_ms` added to the window for the time
//! a request takes to reach Clio after it took its place.
//!
//! The whole decision is one statement (`app_budget_take`, migration 0014): it locks the
//! app's budget for its transaction, counts the places taken within the window, and takes
//! one or answers how long until the oldest leaves the window.
//!
//! If Postgres cannot be asked, the request goes ahead (logged and counted): Clio's own 429
//! is still honoured by the token's gate, and a job that cannot reach Postgres fails its
//! page write anyway.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use clio_api::AppBudget;
use serde::Deserialize;
use sqlx::PgPool;

use service_runtime::config::ConfigError;

/// `[app_budget]`: the budget of each Clio app, by client id.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AppBudgetConfig {
    /// The budget of any app not listed in `apps`; none: unbudgeted.
    pub default: Option<Budget>,
    /// Budgets by the app's Clio client id.
    pub apps: BTreeMap<String, Budget>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Requests the app may send in any window.
    pub requests: u32,
    pub window_secs: u64,
    /// Added to the window: a request takes its place before it reaches Clio.
    #[serde(default = "default_margin_ms")]
    pub margin_ms: u64,
}

fn default_margin_ms() -> u64 {
    1_000
}

impl AppBudgetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let named = self
            .apps
            .iter()
            .map(|(client_id, budget)| (format!("app_budget.apps.{client_id}"), budget));
        let default = self
            .default
            .as_ref()
            .map(|budget| ("app_budget.default".to_owned(), budget));
        for (key, budget) in named.chain(default) {
            if budget.requests == 0 || i32::try_from(budget.requests).is_err() {
                return Err(ConfigError::invalid(
                    format!("{key}.requests"),
                    format!("{} is not between 1 and {}", budget.requests, i32::MAX),
                ));
            }
            if budget.window_secs == 0 || budget.window_secs > 86_400 {
                return Err(ConfigError::invalid(
                    format!("{key}.window_secs"),
                    format!("{} is not between 1 and 86400", budget.window_secs),
                ));
            }
            if budget.margin_ms > 60_000 {
                return Err(ConfigError::invalid(
                    format!("{key}.margin_ms"),
                    format!("{} is above 60000", budget.margin_ms),
                ));
            }
        }
        Ok(())
    }

    fn budget_of(&self, client_id: &str) -> Option<Budget> {
        self.apps.get(client_id).copied().or(self.default)
    }
}

/// The budgets of every app, over one pool. Cheap to clone.
#[derive(Clone)]
pub struct AppBudgets {
    pool: PgPool,
    config: Arc<AppBudgetConfig>,
    metrics: crate::metrics::ImportMetrics,
}

impl AppBudgets {
    pub fn new(
        pool: PgPool,
        config: AppBudgetConfig,
        metrics: crate::metrics::ImportMetrics,
    ) -> Self {
        AppBudgets {
            pool,
            config: Arc::new(config),
            metrics,
        }
    }

    /// The budget of the app `client_id` in `region` (its client ids are per region), or
    /// `None` when it has none.
    pub fn of(&self, region: &str, client_id: &str) -> Option<Arc<dyn AppBudget>> {
        let budget = self.config.budget_of(client_id)?;
        Some(Arc::new(OneApp {
            key: format!("{region}:{client_id}"),
            budget,
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
        }))
    }
}

/// One app's budget.
struct OneApp {
    key: String,
    budget: Budget,
    pool: PgPool,
    metrics: crate::metrics::ImportMetrics,
}

/// Longest single sleep before asking again: a place may free early (a budget lowered,
/// the table cleaned), and a cancelled job should notice soon.
const MAX_NAP: Duration = Duration::from_secs(5);

impl OneApp {
    /// Waits for a place; returns how long it waited.
    async fn take(&self) -> Duration {
        let started = tokio::time::Instant::now();
        let window_ms = self
            .budget
            .window_secs
            .saturating_mul(1_000)
            .saturating_add(self.budget.margin_ms);
        loop {
            let answer: Result<i64, sqlx::Error> =
                sqlx::query_scalar("SELECT app_budget_take($1, $2, $3)")
                    .bind(&self.key)
                    .bind(i32::try_from(self.budget.requests).unwrap_or(i32::MAX))
                    .bind(i64::try_from(window_ms).unwrap_or(i64::MAX))
                    .fetch_one(&self.pool)
                    .await;
            match answer {
                Ok(0) => return started.elapsed(),
                Ok(wait_ms) => {
                    self.metrics.app_budget_waited();
                    let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1));
                    tokio::time::sleep(wait.min(MAX_NAP)).await;
                }
                Err(error) => {
                    self.metrics.app_budget_unavailable();
                    tracing::warn!(app = %self.key, %error, "cannot take a place in the app's budget; sending anyway");
                    return started.elapsed();
                }
            }
        }
    }
}

impl AppBudget for OneApp {
    fn acquire(&self) -> Pin<Box<dyn Future<Output = Duration> + Send + '_>> {
        Box::pin(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(requests: u32, window_secs: u64) -> Budget {
        Budget {
            requests,
            window_secs,
            margin_ms: default_margin_ms(),
        }
    }

    #[test]
    fn a_listed_app_has_its_own_budget_and_the_others_the_default() {
        let config = AppBudgetConfig {
            default: Some(budget(1_000, 60)),
            apps: BTreeMap::from([("big-app".to_owned(), budget(5_000, 60))]),
        };
        config.validate().unwrap();
        assert_eq!(config.budget_of("big-app").unwrap().requests, 5_000);
        assert_eq!(config.budget_of("other").unwrap().requests, 1_000);
        assert_eq!(AppBudgetConfig::default().budget_of("other"), None);
    }

    #[test]
    fn a_zero_budget_or_window_is_refused_by_its_key() {
        let zero = AppBudgetConfig {
            apps: BTreeMap::from([("app-1".to_owned(), budget(0, 60))]),
            ..AppBudgetConfig::default()
        };
        let error = zero.validate().unwrap_err().to_string();
        assert!(error.contains("app_budget.apps.app-1.requests"), "{error}");
        let no_window = AppBudgetConfig {
            default: Some(budget(10, 0)),
            ..AppBudgetConfig::default()
        };
        let error = no_window.validate().unwrap_err().to_string();
        assert!(error.contains("app_budget.default.window_secs"), "{error}");
    }
}
