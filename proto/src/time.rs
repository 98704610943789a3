//! `google.protobuf.Timestamp` ↔ `chrono`: the one conversion every service and client uses.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// The wire form of `at` (nanosecond precision kept).
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant a wire timestamp names, or `None` when it names none (nanos outside
/// 0..1e9, or seconds beyond what `chrono` represents): callers refuse that as a bad field.
pub fn date_time(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos).filter(|_| nanos < 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_survives_the_round_trip_and_nonsense_is_none() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(date_time(&timestamp(at)), Some(at));
        for (seconds, nanos) in [(0, -1), (0, 1_000_000_000), (i64::MAX, 0)] {
            assert_eq!(
                date_time(&Timestamp { seconds, nanos }),
                None,
                "{seconds}.{nanos}"
            );
        }
    }
}
