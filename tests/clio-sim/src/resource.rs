//! The API v4 resources the simulator serves, and their record ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A served API v4 resource (the path segment after `/api/v4/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Users,
    Contacts,
    Matters,
    CalendarEntries,
    Activities,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Users,
        Resource::Contacts,
        Resource::Matters,
        Resource::CalendarEntries,
        Resource::Activities,
    ];

    /// Path segment and JSON name (`calendar_entries`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::Contacts => "contacts",
            Resource::Matters => "matters",
            Resource::CalendarEntries => "calendar_entries",
            Resource::Activities => "activities",
        }
    }

    /// The developer-app permission family that guards this resource (`calendar` for
    /// calendar entries).
    pub fn family(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::Contacts => "contacts",
            Resource::Matters => "matters",
            Resource::CalendarEntries => "calendar",
            Resource::Activities => "activities",
        }
    }

    /// Calendar entry ids are strings on the wire (recurring instances); all others are
    /// 64-bit integers.
    pub fn has_string_ids(self) -> bool {
        self == Resource::CalendarEntries
    }

    /// First generated id minus one. Contacts and activities start above `i32::MAX` so a
    /// client storing ids in 32 bits fails fast.
    pub(crate) fn id_base(self) -> i64 {
        match self {
            Resource::Users => 344_000_000,
            Resource::Contacts => 2_200_000_000,
            Resource::Matters => 1_600_000_000,
            Resource::CalendarEntries => 4_100_000_000,
            Resource::Activities => 5_300_000_000,
        }
    }

    pub(crate) fn slot(self) -> usize {
        match self {
            Resource::Users => 0,
            Resource::Contacts => 1,
            Resource::Matters => 2,
            Resource::CalendarEntries => 3,
            Resource::Activities => 4,
        }
    }

    /// Endpoint templates recorded in the call log.
    pub(crate) fn index_endpoint(self) -> &'static str {
        match self {
            Resource::Users => "/api/v4/users",
            Resource::Contacts => "/api/v4/contacts",
            Resource::Matters => "/api/v4/matters",
            Resource::CalendarEntries => "/api/v4/calendar_entries",
            Resource::Activities => "/api/v4/activities",
        }
    }

    pub(crate) fn record_endpoint(self) -> &'static str {
        match self {
            Resource::Users => "/api/v4/users/{id}",
            Resource::Contacts => "/api/v4/contacts/{id}",
            Resource::Matters => "/api/v4/matters/{id}",
            Resource::CalendarEntries => "/api/v4/calendar_entries/{id}",
            Resource::Activities => "/api/v4/activities/{id}",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL
            .into_iter()
            .find(|resource| resource.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown resource {s:?}"))
    }
}

/// A record id as it appears on the wire: a number, or a string for calendar entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordId {
    Int(i64),
    Str(String),
}

impl RecordId {
    /// The numeric key the simulator orders by. For calendar entries that is the digits
    /// before an optional `_YYYYMMDD` recurrence suffix.
    pub fn key(&self) -> Option<i64> {
        match self {
            RecordId::Int(id) => Some(*id),
            RecordId::Str(id) => id.split('_').next().and_then(|digits| digits.parse().ok()),
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordId::Int(id) => write!(f, "{id}"),
            RecordId::Str(id) => f.write_str(id),
        }
    }
}

impl From<i64> for RecordId {
    fn from(id: i64) -> Self {
        RecordId::Int(id)
    }
}

impl From<&str> for RecordId {
    fn from(id: &str) -> Self {
        RecordId::Str(id.to_owned())
    }
}

impl From<String> for RecordId {
    fn from(id: String) -> Self {
        RecordId::Str(id)
    }
}

impl From<&serde_json::Value> for RecordId {
    fn from(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(RecordId::Int)
                .unwrap_or_else(|| RecordId::Str(n.to_string())),
            serde_json::Value::String(s) => RecordId::Str(s.clone()),
            other => RecordId::Str(other.to_string()),
        }
    }
}
