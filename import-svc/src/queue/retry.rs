//! Waiting out a dependency outage without spending the delivery limit.
//!
//! When auth-svc, Postgres or audit-svc is down, a job cannot run now but is not at fault.
//! Handing its message back to the jobs queue would count toward the quorum queue's
//! delivery limit, and a long enough outage would dead-letter a good job. Instead the
//! message is published (confirmed) to a delay tier — a queue whose message TTL
//! dead-letters it back to the jobs exchange — and only then acked. The attempt count and
//! the outage's start travel in headers, so any replica continues the same backoff.
//! After `importer.max_outage_secs` of one outage the job fails, visibly, with the reason.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use proto::queue::header;

/// A message's headers for another trip through a delay tier: all of them but the
/// broker's `x-death` history, which grows with every trip.
pub fn without_death_history(original: Option<&FieldTable>) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(original) = original {
        for (name, value) in original.inner() {
            if name.as_str() != header::X_DEATH {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    headers
}

/// How often the message was deferred for its connection's turn ([`header::DEFERRALS`]).
pub fn deferrals(headers: Option<&FieldTable>) -> u32 {
    match headers.and_then(|h| h.inner().get(header::DEFERRALS)) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// The headers of a message deferred once more: as it came (less `x-death`), counting
/// this deferral.
pub fn deferred_headers(original: Option<&FieldTable>) -> FieldTable {
    let count = deferrals(original).saturating_add(1);
    let mut headers = without_death_history(original);
    headers.insert(
        header::DEFERRALS.into(),
        AMQPValue::LongLongInt(i64::from(count)),
    );
    headers
}

/// The retry state a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryState {
    pub attempt: u32,
    pub outage_started_ms: i64,
    pub last_retry_ms: i64,
}

impl RetryState {
    /// Reads the state from a message's headers; `None` for a first failure.
    pub fn of(headers: Option<&FieldTable>) -> Option<RetryState> {
        let headers = headers?.inner();
        let int = |name: &str| match headers.get(name)? {
            AMQPValue::LongLongInt(v) => Some(*v),
            AMQPValue::LongInt(v) => Some(i64::from(*v)),
            AMQPValue::LongUInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortInt(v) => Some(i64::from(*v)),
            AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
            _ => None,
        };
        Some(RetryState {
            attempt: u32::try_from(int(header::RETRY_ATTEMPT)?).ok()?,
            outage_started_ms: int(header::RETRY_OUTAGE_STARTED_MS)?,
            last_retry_ms: int(header::RETRY_LAST_MS)?,
        })
    }

    /// The message's headers for its next trip through a retry tier: the original ones
    /// (less the broker's `x-death` history, which grows with every trip) and this state.
    pub fn headers(&self, original: Option<&FieldTable>, reason: &str) -> FieldTable {
        let mut headers = without_death_history(original);
        headers.insert(
            header::RETRY_ATTEMPT.into(),
            AMQPValue::LongLongInt(i64::from(self.attempt)),
        );
        headers.insert(
            header::RETRY_OUTAGE_STARTED_MS.into(),
            AMQPValue::LongLongInt(self.outage_started_ms),
        );
        headers.insert(
            header::RETRY_LAST_MS.into(),
            AMQPValue::LongLongInt(self.last_retry_ms),
        );
        // A reason is for people; keep it to a size that never bloats the message.
        let reason: String = reason.chars().take(512).collect();
        headers.insert(
            header::RETRY_REASON.into(),
            AMQPValue::LongString(LongString::from(reason.as_str())),
        );
        headers
    }
}

/// What to do with a job that cannot run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Park it for `delay_ms` (one of the tiers) carrying `state`.
    Wait { delay_ms: u64, state: RetryState },
    /// The outage has lasted longer than allowed: fail the job.
    GiveUp { outage: Duration },
}

/// Decides the next step. A retry long after the previous one belongs to a new outage (the
/// job ran in between), so its backoff and outage clock start again.
pub fn plan(
    previous: Option<RetryState>,
    now_ms: i64,
    delays_ms: &[u64],
    max_outage: Duration,
) -> Plan {
    let longest = delays_ms.iter().copied().max().unwrap_or(1_000);
    let new_outage_after =
        i64::try_from(longest.saturating_mul(2).saturating_add(60_000)).unwrap_or(i64::MAX);
    let previous = previous.filter(|p| now_ms.saturating_sub(p.last_retry_ms) <= new_outage_after);
    let (attempt, outage_started_ms) = match previous {
        Some(p) => (p.attempt.saturating_add(1), p.outage_started_ms),
        None => (1, now_ms),
    };
    let outage = Duration::from_millis(u64::try_from(now_ms - outage_started_ms).unwrap_or(0));
    if outage >= max_outage {
        return Plan::GiveUp { outage };
    }
    let tier = usize::try_from(attempt - 1)
        .unwrap_or(usize::MAX)
        .min(delays_ms.len().saturating_sub(1));
    Plan::Wait {
        delay_ms: delays_ms.get(tier).copied().unwrap_or(longest),
        state: RetryState {
            attempt,
            outage_started_ms,
            last_retry_ms: now_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_deferral_is_counted_on_the_message() {
        assert_eq!(deferrals(None), 0);
        let once = deferred_headers(None);
        assert_eq!(deferrals(Some(&once)), 1);
        let twice = deferred_headers(Some(&once));
        assert_eq!(deferrals(Some(&twice)), 2);
    }

    const DELAYS: &[u64] = &[1_000, 5_000, 30_000];
    const HOUR: Duration = Duration::from_secs(3_600);

    fn wait_of(plan: Plan) -> (u64, RetryState) {
        match plan {
            Plan::Wait { delay_ms, state } => (delay_ms, state),
            Plan::GiveUp { .. } => panic!("expected a wait, got {plan:?}"),
        }
    }

    #[test]
    fn backoff_climbs_the_tiers_and_stays_on_the_last() {
        let (delay, first) = wait_of(plan(None, 0, DELAYS, HOUR));
        assert_eq!(
            (delay, first.attempt, first.outage_started_ms),
            (1_000, 1, 0)
        );
        let (delay, second) = wait_of(plan(Some(first), 1_000, DELAYS, HOUR));
        assert_eq!((delay, second.attempt), (5_000, 2));
        let (delay, third) = wait_of(plan(Some(second), 6_000, DELAYS, HOUR));
        assert_eq!(delay, 30_000);
        let (delay, fourth) = wait_of(plan(Some(third), 36_000, DELAYS, HOUR));
        assert_eq!(
            (delay, fourth.attempt, fourth.outage_started_ms),
            (30_000, 4, 0)
        );
    }

    #[test]
    fn an_outage_longer_than_the_limit_gives_up() {
        let mut state = wait_of(plan(None, 0, DELAYS, HOUR)).1;
        let mut now = 0;
        loop {
            now += 30_000;
            match plan(Some(state), now, DELAYS, HOUR) {
                Plan::Wait { state: next, .. } => state = next,
                Plan::GiveUp { outage } => {
                    assert_eq!(outage, HOUR);
                    break;
                }
            }
        }
        assert_eq!(now, 3_600_000, "every retry within the hour waits");
    }

    #[test]
    fn a_retry_long_after_the_previous_one_starts_a_new_outage() {
        let first = wait_of(plan(None, 0, DELAYS, HOUR)).1;
        let later = 10 * 3_600_000;
        let (delay, state) = wait_of(plan(Some(first), later, DELAYS, HOUR));
        assert_eq!(
            (delay, state.attempt, state.outage_started_ms),
            (1_000, 1, later)
        );
    }

    #[test]
    fn the_state_round_trips_through_headers_without_the_death_history() {
        let state = RetryState {
            attempt: 3,
            outage_started_ms: 1_700_000_000_000,
            last_retry_ms: 1_700_000_005_000,
        };
        let mut original = FieldTable::default();
        original.insert("x-death".into(), AMQPValue::LongString("old".into()));
        original.insert("traceparent".into(), AMQPValue::LongString("00-abc".into()));
        let headers = state.headers(Some(&original), "auth-svc unavailable");
        assert_eq!(RetryState::of(Some(&headers)), Some(state));
        assert!(!headers.inner().contains_key("x-death"));
        assert!(headers.inner().contains_key("traceparent"));
        assert_eq!(RetryState::of(Some(&original)), None);
    }
}
