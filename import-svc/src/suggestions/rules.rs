//! Which calendar entries hold unbilled time, and the time entry each would become.
//!
//! An entry is billable when it has a matter, is not all-day, is not cancelled and lasts
//! at least the tenant's minimum; its quantity is its length rounded up to whole billing
//! units (6 minutes by default: tenths of an hour). Whether Clio already has an activity
//! for it, or a suggestion exists, is for [`super::detect`] to find out.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::Deserialize;
use serde_json::Value;

/// The calendar entry fields detection reads (nothing else of the calendar is asked for).
pub const CALENDAR_FIELDS: &str =
    "id,summary,start_at,end_at,all_day,matter{id},attendees{id,type}";

/// Longest description kept (Clio's notes are longer; summaries are short).
const MAX_DESCRIPTION_CHARS: usize = 500;

/// One tenant's rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Entries shorter than this many minutes are not suggested.
    pub min_minutes: u32,
    /// The billing unit in minutes: quantities are rounded up to whole units.
    pub unit_minutes: u32,
    /// Summaries starting with one of these (ignoring case) are cancelled meetings.
    pub cancelled_prefixes: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            min_minutes: 6,
            unit_minutes: 6,
            cancelled_prefixes: vec!["Cancelled:".into(), "Canceled:".into()],
        }
    }
}

/// The rules of every tenant: the defaults, and each tenant's own where it has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantRules {
    pub default: Rules,
    pub tenants: BTreeMap<String, Rules>,
}

impl TenantRules {
    pub fn of(&self, tenant: &str) -> &Rules {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    /// A rule that could suggest nothing sensible, named by its config path.
    pub fn check(&self) -> Result<(), (String, &'static str)> {
        let named = std::iter::once(("default".to_owned(), &self.default)).chain(
            self.tenants
                .iter()
                .map(|(tenant, rules)| (format!("tenants.{tenant}"), rules)),
        );
        for (path, rules) in named {
            if rules.unit_minutes == 0 {
                return Err((format!("{path}.unit_minutes"), "must be at least 1"));
            }
            if rules.min_minutes > 24 * 60 {
                return Err((
                    format!("{path}.min_minutes"),
                    "must be at most a day (1440)",
                ));
            }
        }
        Ok(())
    }
}

/// The time entry a billable calendar entry becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub calendar_entry_id: String,
    pub matter_id: i64,
    pub user_id: i64,
    /// The entry's start date, in the entry's own offset.
    pub date: NaiveDate,
    pub quantity_secs: i64,
    pub description: String,
}

/// Why an entry gives no suggestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    WithoutMatter,
    AllDay,
    Cancelled,
    TooShort,
    WithoutUser,
    /// No usable id or times (the entry is counted, never guessed at).
    Unreadable,
}

/// Applies `rules` to one calendar entry as Clio lists it ([`CALENDAR_FIELDS`]).
pub fn assess(entry: &Value, rules: &Rules) -> Result<Draft, Skip> {
    let calendar_entry_id = match entry.get("id") {
        // Kept and sent back to Clio: text Postgres stores and a URL carries as it is.
        Some(Value::String(id))
            if !id.is_empty() && id.len() <= 256 && !id.contains(char::is_control) =>
        {
            id.clone()
        }
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err(Skip::Unreadable),
    };
    let matter_id = match entry.pointer("/matter/id").and_then(Value::as_i64) {
        Some(id) if id > 0 => id,
        _ => return Err(Skip::WithoutMatter),
    };
    if entry.get("all_day").and_then(Value::as_bool) == Some(true) {
        return Err(Skip::AllDay);
    }
    let summary = entry.get("summary").and_then(Value::as_str).unwrap_or("");
    if is_cancelled(summary, rules) {
        return Err(Skip::Cancelled);
    }
    let start = time(entry, "start_at").ok_or(Skip::Unreadable)?;
    let end = time(entry, "end_at").ok_or(Skip::Unreadable)?;
    let seconds = (end - start).num_seconds();
    if seconds < i64::from(rules.min_minutes) * 60 || seconds <= 0 {
        return Err(Skip::TooShort);
    }
    let user_id = owner(entry).ok_or(Skip::WithoutUser)?;
    Ok(Draft {
        calendar_entry_id,
        matter_id,
        user_id,
        date: start.date_naive(),
        quantity_secs: billed_seconds(seconds, rules.unit_minutes),
        description: description(summary),
    })
}

/// `seconds` rounded up to whole units of `unit_minutes`.
pub fn billed_seconds(seconds: i64, unit_minutes: u32) -> i64 {
    let unit = i64::from(unit_minutes.max(1)) * 60;
    (seconds + unit - 1) / unit * unit
}

fn is_cancelled(summary: &str, rules: &Rules) -> bool {
    let summary = summary.trim_start();
    rules.cancelled_prefixes.iter().any(|prefix| {
        summary
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    })
}

fn time(entry: &Value, field: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(entry.get(field)?.as_str()?).ok()
}

/// The Clio user the entry's time is billed to: its first attendee that is a user (the
/// calendar's owner; `calendar_owner` names a calendar, not a user).
fn owner(entry: &Value) -> Option<i64> {
    entry
        .get("attendees")?
        .as_array()?
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("User"))?
        .get("id")?
        .as_i64()
        .filter(|id| *id > 0)
}

/// The time entry's note: the entry's summary, on one line, without control characters
/// (Postgres refuses NUL), bounded.
fn description(summary: &str) -> String {
    let one_line = summary
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match one_line.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((cut, _)) => one_line[..cut].to_owned(),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(start: &str, end: &str) -> Value {
        json!({
            "id": "ce-7",
            "summary": "Client meeting – 00012-Smith",
            "start_at": start,
            "end_at": end,
            "all_day": false,
            "matter": {"id": 12},
            "attendees": [{"id": 900, "type": "Contact"}, {"id": 3, "type": "User"}],
        })
    }

    #[test]
    fn a_meeting_becomes_a_time_entry_rounded_up_to_the_unit() {
        let draft = assess(
            &entry("2026-06-09T23:10:00-05:00", "2026-06-09T23:47:00-05:00"),
            &Rules::default(),
        )
        .unwrap();
        assert_eq!(
            draft,
            Draft {
                calendar_entry_id: "ce-7".into(),
                matter_id: 12,
                user_id: 3,
                // The entry's own date, not UTC's (already the 10th there).
                date: NaiveDate::from_ymd_opt(2026, 6, 9).unwrap(),
                // 37 minutes: seven 6-minute units.
                quantity_secs: 42 * 60,
                description: "Client meeting – 00012-Smith".into(),
            }
        );
    }

    #[test]
    fn units_round_up_and_exact_lengths_stay() {
        assert_eq!(billed_seconds(360, 6), 360);
        assert_eq!(billed_seconds(361, 6), 720);
        assert_eq!(billed_seconds(1, 6), 360);
        assert_eq!(billed_seconds(3_600, 15), 3_600);
        assert_eq!(billed_seconds(3_601, 15), 4_500);
    }

    #[test]
    fn each_rule_names_why_an_entry_is_skipped() {
        let rules = Rules::default();
        let ok = entry("2026-06-09T10:00:00Z", "2026-06-09T10:30:00Z");
        let with = |change: &dyn Fn(&mut Value)| {
            let mut e = ok.clone();
            change(&mut e);
            assess(&e, &rules)
        };
        assert!(with(&|_| {}).is_ok());
        assert_eq!(
            with(&|e| e["matter"] = Value::Null),
            Err(Skip::WithoutMatter)
        );
        assert_eq!(with(&|e| e["all_day"] = json!(true)), Err(Skip::AllDay));
        assert_eq!(
            with(&|e| e["summary"] = json!("  CANCELLED: Call with client")),
            Err(Skip::Cancelled)
        );
        assert_eq!(
            with(&|e| e["end_at"] = json!("2026-06-09T10:05:59Z")),
            Err(Skip::TooShort)
        );
        assert_eq!(
            with(&|e| e["end_at"] = json!("2026-06-09T09:00:00Z")),
            Err(Skip::TooShort)
        );
        assert_eq!(
            with(&|e| e["attendees"] = json!([{"id": 9, "type": "Contact"}])),
            Err(Skip::WithoutUser)
        );
        assert_eq!(
            with(&|e| e["start_at"] = json!("yesterday")),
            Err(Skip::Unreadable)
        );
        assert_eq!(with(&|e| e["id"] = json!("")), Err(Skip::Unreadable));
        assert_eq!(
            with(&|e| e["id"] = json!("ce\u{0}7")),
            Err(Skip::Unreadable)
        );
    }

    #[test]
    fn six_minutes_exactly_is_billed_and_a_tenant_may_ask_for_more() {
        let six = entry("2026-06-09T10:00:00Z", "2026-06-09T10:06:00Z");
        assert_eq!(assess(&six, &Rules::default()).unwrap().quantity_secs, 360);
        let stricter = Rules {
            min_minutes: 15,
            unit_minutes: 15,
            ..Rules::default()
        };
        assert_eq!(assess(&six, &stricter), Err(Skip::TooShort));
        let rules = TenantRules {
            tenants: BTreeMap::from([("firm-2".to_owned(), stricter.clone())]),
            ..TenantRules::default()
        };
        assert_eq!(rules.of("firm-2"), &stricter);
        assert_eq!(rules.of("firm-1"), &Rules::default());
    }

    #[test]
    fn a_rule_that_suggests_nothing_sensible_is_refused_by_name() {
        let mut rules = TenantRules::default();
        rules.tenants.insert(
            "firm-2".into(),
            Rules {
                unit_minutes: 0,
                ..Rules::default()
            },
        );
        assert_eq!(
            rules.check(),
            Err((
                "tenants.firm-2.unit_minutes".to_owned(),
                "must be at least 1"
            ))
        );
    }

    #[test]
    fn descriptions_are_one_bounded_line() {
        assert_eq!(description("Call\nwith   client\t"), "Call with client");
        assert_eq!(description("Call\u{0}with\u{1b}client"), "Call with client");
        assert_eq!(description(&"é".repeat(600)).chars().count(), 500);
    }
}
