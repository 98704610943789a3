//! Import resources and the scope each one needs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scope::{Access, Family, Scope};

/// A Clio resource an import job can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Contacts,
    Matters,
    CalendarEntries,
    Activities,
    Users,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Contacts,
        Resource::Matters,
        Resource::CalendarEntries,
        Resource::Activities,
        Resource::Users,
    ];

    /// The name used in jobs, tables and Clio paths (`/api/v4/<name>.json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Contacts => "contacts",
            Resource::Matters => "matters",
            Resource::CalendarEntries => "calendar_entries",
            Resource::Activities => "activities",
            Resource::Users => "users",
        }
    }

    /// The scope a grant must cover to import this resource.
    pub fn required_scope(self) -> Scope {
        let family = match self {
            Resource::Contacts => Family::Contacts,
            Resource::Matters => Family::Matters,
            Resource::CalendarEntries => Family::Calendar,
            Resource::Activities => Family::Activities,
            Resource::Users => Family::Users,
        };
        Scope::new(family, Access::Read)
    }

    /// Clio gives calendar entries string ids (recurring instances); everything else is a
    /// 64-bit integer.
    pub fn has_string_ids(self) -> bool {
        matches!(self, Resource::CalendarEntries)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown resource {0:?}: expected one of contacts, matters, calendar_entries, activities, users"
)]
pub struct UnknownResource(pub String);

impl FromStr for Resource {
    type Err = UnknownResource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownResource(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_needs_the_documented_scope() {
        let needs: Vec<String> = Resource::ALL
            .iter()
            .map(|r| r.required_scope().to_string())
            .collect();
        assert_eq!(
            needs,
            [
                "contacts:read",
                "matters:read",
                "calendar:read",
                "activities:read",
                "users:read"
            ]
        );
        assert_eq!("calendar_entries".parse(), Ok(Resource::CalendarEntries));
        assert!("invoices".parse::<Resource>().is_err());
    }
}
