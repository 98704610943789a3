//! The catalogue itself: every family, its Clio permission, and its tier at each access.
//!
//! Tiers come from the seed's table where it rates a scope, otherwise from the rule in
//! `shared/scopes.md`: any write is at least high, trust accounts are very high, documents
//! are at least high, users/custom-fields reads are low, other reads medium.

use crate::scope::{Family, RiskTier};

#[derive(Debug, Clone, Copy)]
pub struct FamilyInfo {
    pub family: Family,
    /// The name in scope strings.
    pub name: &'static str,
    /// The Clio Manage permission that grants it.
    pub clio_permission: &'static str,
    pub read_tier: RiskTier,
    pub write_tier: RiskTier,
}

use RiskTier::{High, Low, Medium, VeryHigh};

pub const FAMILIES: &[FamilyInfo] = &[
    info(Family::Calendar, "calendar", "Calendars", Low, High),
    info(Family::Matters, "matters", "Matters", Low, High),
    info(Family::Contacts, "contacts", "Contacts", Low, High),
    info(Family::Activities, "activities", "Activities", Medium, High),
    info(
        Family::Communications,
        "communications",
        "Communications",
        Medium,
        High,
    ),
    info(Family::Billing, "billing", "Billing", Medium, High),
    info(Family::Documents, "documents", "Documents", High, High),
    info(
        Family::TrustAccounts,
        "trust_accounts",
        "Accounting",
        VeryHigh,
        VeryHigh,
    ),
    info(Family::Tasks, "tasks", "Tasks", Medium, High),
    info(Family::Users, "users", "Users", Low, High),
    info(
        Family::CustomFields,
        "custom_fields",
        "Custom Fields",
        Low,
        High,
    ),
    info(Family::Webhooks, "webhooks", "Webhooks", Medium, High),
];

const fn info(
    family: Family,
    name: &'static str,
    clio_permission: &'static str,
    read_tier: RiskTier,
    write_tier: RiskTier,
) -> FamilyInfo {
    FamilyInfo {
        family,
        name,
        clio_permission,
        read_tier,
        write_tier,
    }
}

/// The catalogue row of a family. Every `Family` variant has exactly one row (tested).
pub fn family_info(family: Family) -> &'static FamilyInfo {
    // FAMILIES is ordered like the enum, so the discriminant is the index.
    &FAMILIES[family as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_indexed_by_family() {
        for (index, row) in FAMILIES.iter().enumerate() {
            assert_eq!(row.family as usize, index, "{} is out of order", row.name);
            assert_eq!(family_info(row.family).name, row.name);
        }
    }
}
