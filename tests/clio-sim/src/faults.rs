//! Failures on demand: what a region's listener does wrong, and for how long.
//!
//! Faults apply to API calls (`/api/v4/...`) unless a `status` fault names another
//! `path_prefix` (e.g. `/oauth/token`). Several faults may be active; latency adds up,
//! and the first matching fault that changes the answer wins. The `webhook_*` faults
//! touch no request: they shape the region's next webhook deliveries instead, for tests
//! of a receiver under hostile traffic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dataset::Rng;

/// A fault to inject (admin API `POST /__sim/faults`, JSON tagged by `kind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with `status` (500, 502, 503...): the next `count` calls, or a `fraction`
    /// (0..=1) of calls (at most `count` of them when both are set), or every call when
    /// neither is set. `path_prefix` defaults to `/api/v4`.
    Status {
        status: u16,
        count: Option<u32>,
        fraction: Option<f64>,
        path_prefix: Option<String>,
    },
    /// Delay answers by `ms`: the next `count` calls, or all calls.
    Latency { ms: u64, count: Option<u32> },
    /// Close the connection without answering, `count` times.
    Drop { count: u32 },
    /// Answer `count` calls with 429 and `Retry-After: 1`, whatever the limiter says.
    RateLimitStorm { count: u32 },
    /// A storm that lasts `ms` for each token: from a token's first API call after the
    /// injection, every call of that token within `ms` is answered 429 with `Retry-After`
    /// the storm's remaining time in whole seconds, rounded up (so the first 429 says
    /// `ceil(ms / 1000)`). A client that waits as told meets exactly one 429 per token; one
    /// that ignores `Retry-After` meets many. Stays active (for tokens not seen yet) until
    /// the faults are cleared.
    RateLimitStormFor { ms: u64 },
    /// Revoke the grant of the token that makes the `calls`-th authenticated API call
    /// from now; that call is the first one answered `401 invalid_token`.
    RevokeAfter { calls: u32 },
    /// Answer the next `count` calls (all when unset) with the redirect `status` (301,
    /// 302, 307, 308) and `Location` the request's own path and query: a client that
    /// follows redirects gets the page on its next request, one that does not gets the 3xx.
    Redirect { status: u16, count: Option<u32> },
    /// For the next `count` creates (`POST /api/v4/...`), do the work (the record is
    /// created) and then close the connection without answering, after waiting `delay_ms`
    /// (default 0) first: a client whose timeout is shorter than `delay_ms` times out, one
    /// with a longer timeout sees the connection dropped. Either way it cannot know the
    /// entry exists unless it looks. Other requests are untouched and do not use it up.
    DropAfterCreate { count: u32, delay_ms: Option<u64> },
    /// The region's next `count` webhook deliveries are each preceded by a forged copy
    /// without `X-Hook-Signature`, as an attacker would send it (once, never retried);
    /// the genuine delivery follows.
    WebhookUnsigned { count: u32 },
    /// Like `webhook_unsigned`, but the forged copy carries a signature made with a key
    /// that is not the shared secret.
    WebhookBadSignature { count: u32 },
    /// The next `count` deliveries are sent twice: the same bytes and signature again
    /// right after the first was answered (once, never retried), as when an answer is
    /// lost and the sender tries again.
    WebhookDuplicate { count: u32 },
    /// The next `count` deliveries are each held back until their subscription's next
    /// delivery has been queued, and sent after it: a receiver sees a record's newer
    /// update before the older one. Make two changes to the same record to see it.
    WebhookOutOfOrder { count: u32 },
}

/// What a `webhook_*` fault does to one genuine delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WebhookFault {
    Unsigned,
    BadSignature,
    Duplicate,
    OutOfOrder,
}

impl Fault {
    fn webhook(&self) -> Option<WebhookFault> {
        match self {
            Fault::WebhookUnsigned { .. } => Some(WebhookFault::Unsigned),
            Fault::WebhookBadSignature { .. } => Some(WebhookFault::BadSignature),
            Fault::WebhookDuplicate { .. } => Some(WebhookFault::Duplicate),
            Fault::WebhookOutOfOrder { .. } => Some(WebhookFault::OutOfOrder),
            Fault::Status { .. }
            | Fault::Latency { .. }
            | Fault::Drop { .. }
            | Fault::RateLimitStorm { .. }
            | Fault::RateLimitStormFor { .. }
            | Fault::RevokeAfter { .. }
            | Fault::Redirect { .. }
            | Fault::DropAfterCreate { .. } => None,
        }
    }
}

/// What to do to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) delay: Option<Duration>,
    pub(crate) outcome: Option<Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Status(u16),
    Drop,
    /// A 429 telling the client to come back in `retry_after_secs`.
    Storm {
        retry_after_secs: u64,
    },
    /// A redirect with this status to the request's own URL.
    Redirect(u16),
    /// Handle the request, then wait this long and close the connection unanswered.
    DropAfterHandling(Duration),
}

#[derive(Debug)]
struct Active {
    fault: Fault,
    /// Times it may still fire; `None` is unlimited.
    remaining: Option<u32>,
    /// Authenticated calls seen (for `revoke_after`).
    seen: u32,
    /// Per token id, when its storm ends (for `rate_limit_storm_for`). Real time, like
    /// rate-limit windows: clients wait on their own clock.
    storm_ends: HashMap<String, Instant>,
}

#[derive(Debug)]
pub(crate) struct FaultSet {
    active: Mutex<Vec<Active>>,
    rng: Mutex<Rng>,
}

const API_PREFIX: &str = "/api/v4";

impl FaultSet {
    pub(crate) fn new(seed: u64) -> FaultSet {
        FaultSet {
            active: Mutex::default(),
            rng: Mutex::new(Rng::new(seed, 0xFA17, 0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add(&self, fault: Fault) {
        let remaining = match &fault {
            Fault::Status { count, .. }
            | Fault::Latency { count, .. }
            | Fault::Redirect { count, .. } => *count,
            Fault::Drop { count }
            | Fault::RateLimitStorm { count }
            | Fault::DropAfterCreate { count, .. }
            | Fault::WebhookUnsigned { count }
            | Fault::WebhookBadSignature { count }
            | Fault::WebhookDuplicate { count }
            | Fault::WebhookOutOfOrder { count } => Some(*count),
            Fault::RevokeAfter { .. } => Some(1),
            Fault::RateLimitStormFor { .. } => None,
        };
        self.lock().push(Active {
            fault,
            remaining,
            seen: 0,
            storm_ends: HashMap::new(),
        });
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn chance(&self, fraction: f64) -> bool {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        draw < fraction
    }

    /// Decides (and uses up) the faults that apply to a `method` request for `path` made
    /// with the token whose id is `token` (`"none"` without one).
    pub(crate) fn plan(&self, method: &str, path: &str, token: &str) -> Plan {
        let mut plan = Plan::default();
        let mut active = self.lock();
        let now = Instant::now();
        for entry in active.iter_mut() {
            if let Fault::RateLimitStormFor { ms } = entry.fault {
                if plan.outcome.is_none()
                    && path.starts_with(API_PREFIX)
                    && let Some(left) = entry.storm_left(token, Duration::from_millis(ms), now)
                {
                    plan.outcome = Some(Outcome::Storm {
                        retry_after_secs: whole_seconds_up(left),
                    });
                }
                continue;
            }
            let fires = match &entry.fault {
                Fault::Status {
                    fraction,
                    path_prefix,
                    ..
                } => {
                    let prefix = path_prefix.as_deref().unwrap_or(API_PREFIX);
                    plan.outcome.is_none()
                        && path.starts_with(prefix)
                        && fraction.is_none_or(|f| self.chance(f))
                }
                Fault::Latency { .. } => path.starts_with(API_PREFIX),
                Fault::Drop { .. } | Fault::RateLimitStorm { .. } | Fault::Redirect { .. } => {
                    plan.outcome.is_none() && path.starts_with(API_PREFIX)
                }
                Fault::DropAfterCreate { .. } => {
                    plan.outcome.is_none()
                        && method.eq_ignore_ascii_case("POST")
                        && path.starts_with(API_PREFIX)
                }
                Fault::RevokeAfter { .. }
                | Fault::RateLimitStormFor { .. }
                | Fault::WebhookUnsigned { .. }
                | Fault::WebhookBadSignature { .. }
                | Fault::WebhookDuplicate { .. }
                | Fault::WebhookOutOfOrder { .. } => false,
            };
            if !fires {
                continue;
            }
            match &entry.fault {
                Fault::Status { status, .. } => plan.outcome = Some(Outcome::Status(*status)),
                Fault::Latency { ms, .. } => {
                    let total = plan.delay.unwrap_or_default() + Duration::from_millis(*ms);
                    plan.delay = Some(total);
                }
                Fault::Drop { .. } => plan.outcome = Some(Outcome::Drop),
                Fault::Redirect { status, .. } => plan.outcome = Some(Outcome::Redirect(*status)),
                Fault::DropAfterCreate { delay_ms, .. } => {
                    let delay = Duration::from_millis(delay_ms.unwrap_or(0));
                    plan.outcome = Some(Outcome::DropAfterHandling(delay));
                }
                Fault::RateLimitStorm { .. } => {
                    plan.outcome = Some(Outcome::Storm {
                        retry_after_secs: 1,
                    });
                }
                Fault::RevokeAfter { .. }
                | Fault::RateLimitStormFor { .. }
                | Fault::WebhookUnsigned { .. }
                | Fault::WebhookBadSignature { .. }
                | Fault::WebhookDuplicate { .. }
                | Fault::WebhookOutOfOrder { .. } => {}
            }
            if let Some(remaining) = entry.remaining.as_mut() {
                *remaining = remaining.saturating_sub(1);
            }
        }
        active.retain(|entry| entry.remaining != Some(0));
        plan
    }

    /// Uses up one `webhook_*` fault (the oldest injected) for the next genuine webhook
    /// delivery, if any is pending.
    pub(crate) fn take_webhook_fault(&self) -> Option<WebhookFault> {
        let mut active = self.lock();
        let entry = active
            .iter_mut()
            .find(|entry| entry.fault.webhook().is_some() && entry.remaining != Some(0))?;
        let fault = entry.fault.webhook();
        if let Some(remaining) = entry.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
        }
        active.retain(|entry| entry.remaining != Some(0));
        fault
    }

    /// Called for each authenticated API call; true when this call's grant must be
    /// revoked now.
    pub(crate) fn revoke_now(&self) -> bool {
        let mut active = self.lock();
        let mut revoke = false;
        for entry in active.iter_mut() {
            if let Fault::RevokeAfter { calls } = entry.fault {
                entry.seen += 1;
                if entry.seen >= calls {
                    revoke = true;
                    entry.remaining = Some(0);
                }
            }
        }
        active.retain(|entry| entry.remaining != Some(0));
        revoke
    }
}

impl Active {
    /// What is left of `token`'s storm at `now`, starting it on the token's first call;
    /// `None` once it has blown over.
    fn storm_left(&mut self, token: &str, length: Duration, now: Instant) -> Option<Duration> {
        let ends = *self
            .storm_ends
            .entry(token.to_owned())
            .or_insert(now + length);
        (now < ends).then(|| ends - now)
    }
}

/// `Retry-After` is in whole seconds; rounding down would send the client back early.
fn whole_seconds_up(duration: Duration) -> u64 {
    duration
        .as_millis()
        .div_ceil(1000)
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counted_faults_wear_off_and_latency_stacks_with_them() {
        let faults = FaultSet::new(1);
        faults.add(Fault::Status {
            status: 503,
            count: Some(2),
            fraction: None,
            path_prefix: None,
        });
        faults.add(Fault::Latency { ms: 5, count: None });
        let first = faults.plan("GET", "/api/v4/contacts", "t1");
        assert_eq!(first.outcome, Some(Outcome::Status(503)));
        assert_eq!(first.delay, Some(Duration::from_millis(5)));
        assert_eq!(faults.plan("GET", "/oauth/token", "t1").outcome, None);
        assert_eq!(
            faults.plan("GET", "/api/v4/contacts", "t1").outcome,
            Some(Outcome::Status(503))
        );
        assert_eq!(faults.plan("GET", "/api/v4/contacts", "t1").outcome, None);
    }

    #[test]
    fn a_fraction_fails_about_that_share_of_calls() {
        let faults = FaultSet::new(7);
        faults.add(Fault::Status {
            status: 500,
            count: None,
            fraction: Some(0.25),
            path_prefix: None,
        });
        let failed = (0..4000)
            .filter(|_| {
                faults
                    .plan("GET", "/api/v4/matters", "t1")
                    .outcome
                    .is_some()
            })
            .count();
        assert!((800..1200).contains(&failed), "{failed}");
    }

    #[test]
    fn a_storm_for_a_duration_lasts_that_long_per_token_from_its_first_call() {
        let faults = FaultSet::new(1);
        faults.add(Fault::RateLimitStormFor { ms: 60_000 });
        let storm = |token| faults.plan("GET", "/api/v4/contacts", token).outcome;
        assert_eq!(
            storm("t1"),
            Some(Outcome::Storm {
                retry_after_secs: 60
            })
        );
        assert!(
            matches!(storm("t1"), Some(Outcome::Storm { retry_after_secs }) if retry_after_secs <= 60)
        );
        assert_eq!(
            storm("t2"),
            Some(Outcome::Storm {
                retry_after_secs: 60
            }),
            "each token has its own storm"
        );
        assert_eq!(faults.plan("GET", "/oauth/token", "t1").outcome, None);

        let mut entry = faults.lock().pop().unwrap();
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(
            entry.storm_left("t1", Duration::from_secs(60), later),
            None,
            "blown over"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::from_millis(2_001)), 3);
        assert_eq!(whole_seconds_up(Duration::from_millis(2_000)), 2);
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
    }

    #[test]
    fn drop_after_create_fires_on_creates_only() {
        let faults = FaultSet::new(1);
        faults.add(Fault::DropAfterCreate {
            count: 2,
            delay_ms: Some(50),
        });
        assert_eq!(faults.plan("GET", "/api/v4/activities", "t1").outcome, None);
        assert_eq!(faults.plan("POST", "/oauth/token", "t1").outcome, None);
        let dropped = Some(Outcome::DropAfterHandling(Duration::from_millis(50)));
        assert_eq!(
            faults.plan("POST", "/api/v4/activities.json", "t1").outcome,
            dropped
        );
        assert_eq!(
            faults.plan("POST", "/api/v4/activities", "t2").outcome,
            dropped
        );
        assert_eq!(
            faults.plan("POST", "/api/v4/activities", "t1").outcome,
            None,
            "worn off after count creates"
        );
    }

    #[test]
    fn webhook_faults_shape_deliveries_in_order_and_touch_no_request() {
        let faults = FaultSet::new(1);
        faults.add(Fault::WebhookDuplicate { count: 1 });
        faults.add(Fault::WebhookUnsigned { count: 2 });
        assert_eq!(
            faults.plan("POST", "/api/v4/activities", "t1"),
            Plan::default()
        );
        assert_eq!(faults.take_webhook_fault(), Some(WebhookFault::Duplicate));
        assert_eq!(faults.take_webhook_fault(), Some(WebhookFault::Unsigned));
        assert_eq!(faults.take_webhook_fault(), Some(WebhookFault::Unsigned));
        assert_eq!(faults.take_webhook_fault(), None);
    }

    #[test]
    fn revoke_after_fires_on_the_nth_call_once() {
        let faults = FaultSet::new(1);
        faults.add(Fault::RevokeAfter { calls: 3 });
        assert_eq!(
            (0..5).map(|_| faults.revoke_now()).collect::<Vec<_>>(),
            [false, false, true, false, false]
        );
    }
}
