//! How the services' values read on a page: enums as words, times in UTC, scopes as
//! `family:access`.

use proto::common::v1::{Access, RiskTier, Scope};

/// `RISK_TIER_VERY_HIGH` as "very high": the enum's name without its prefix.
fn words(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', " ")
}

pub fn tier(value: i32) -> String {
    RiskTier::try_from(value).map_or_else(
        |_| "unknown".into(),
        |t| words(t.as_str_name(), "RISK_TIER_"),
    )
}

pub fn connection_status(value: i32) -> String {
    proto::auth::v1::ConnectionStatus::try_from(value).map_or_else(
        |_| "unknown".into(),
        |s| words(s.as_str_name(), "CONNECTION_STATUS_"),
    )
}

pub fn app_status(value: i32) -> String {
    proto::auth::v1::AppStatus::try_from(value).map_or_else(
        |_| "unknown".into(),
        |s| words(s.as_str_name(), "APP_STATUS_"),
    )
}

pub fn suggestion_status(value: i32) -> String {
    proto::suggestions::v1::SuggestionStatus::try_from(value).map_or_else(
        |_| "unknown".into(),
        |s| words(s.as_str_name(), "SUGGESTION_STATUS_"),
    )
}

pub fn scope(scope: &Scope) -> String {
    let access = match Access::try_from(scope.access) {
        Ok(Access::Write) => "write",
        Ok(Access::Read) => "read",
        _ => "?",
    };
    format!("{}:{access}", scope.family)
}

pub fn scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(scope).collect::<Vec<_>>().join(", ")
}

/// Who revoked a connection, when and why; empty while it is not revoked.
pub fn revocation(c: &proto::auth::v1::Connection) -> String {
    if c.revoked_by.is_empty() {
        return String::new();
    }
    format!(
        "by {} at {}: {}",
        c.revoked_by,
        when(c.revoked_at.as_ref()),
        c.revocation_reason
    )
}

/// A timestamp as `2026-11-30 06:40 UTC`; "never" when unset.
pub fn when(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or_else(
            || "never".into(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_read_as_words() {
        assert_eq!(tier(RiskTier::VeryHigh as i32), "very high");
        assert_eq!(tier(99), "unknown");
        assert_eq!(
            scope(&Scope {
                family: "contacts".into(),
                access: Access::Write as i32
            }),
            "contacts:write"
        );
        assert_eq!(when(None), "never");
    }
}
