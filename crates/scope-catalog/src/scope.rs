//! Scope, access, family and risk-tier types, with the tier rule from `shared/scopes.md`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::catalog::family_info;

/// A Clio permission family (one row of the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Calendar,
    Matters,
    Contacts,
    Activities,
    Communications,
    Billing,
    Documents,
    TrustAccounts,
    Tasks,
    Users,
    CustomFields,
    /// Subscribing to change notifications (Clio's webhooks permission). Not rated by the
    /// seed: reading or listing subscriptions is medium, creating one is high by the
    /// write rule — a subscription sends the firm's records to a URL of the app's choice.
    Webhooks,
}

impl Family {
    /// The name used in scope strings (`trust_accounts`).
    pub fn as_str(self) -> &'static str {
        family_info(self).name
    }
}

impl FromStr for Family {
    type Err = ParseScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::catalog::FAMILIES
            .iter()
            .find(|info| info.name == s)
            .map(|info| info.family)
            .ok_or_else(|| ParseScopeError::UnknownFamily(s.to_owned()))
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read, or Clio's "read/write" (read, create, update, destroy). Ordered so that
/// `Write > Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Risk tiers, ordered from least to most dangerous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskTier {
    Low,
    Medium,
    High,
    VeryHigh,
}

impl RiskTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Medium => "medium",
            RiskTier::High => "high",
            RiskTier::VeryHigh => "very_high",
        }
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scope, e.g. `contacts:read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub family: Family,
    pub access: Access,
}

impl Scope {
    pub const fn new(family: Family, access: Access) -> Self {
        Scope { family, access }
    }

    /// Whether holding `self` allows what `required` asks: same family, and write covers
    /// read.
    pub fn covers(&self, required: &Scope) -> bool {
        self.family == required.family && self.access >= required.access
    }

    /// The tier of this one scope: the seed's table first, then the rule for the rest.
    pub fn risk_tier(&self) -> RiskTier {
        let info = family_info(self.family);
        match self.access {
            Access::Read => info.read_tier,
            Access::Write => info.write_tier,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.family, self.access.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseScopeError {
    #[error("scope {0:?} is not of the form <family>:<read|write>")]
    Malformed(String),
    #[error("unknown scope family {0:?}")]
    UnknownFamily(String),
    #[error("unknown access {0:?}: expected read or write")]
    UnknownAccess(String),
}

impl FromStr for Scope {
    type Err = ParseScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (family, access) = s
            .split_once(':')
            .ok_or_else(|| ParseScopeError::Malformed(s.to_owned()))?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            other => return Err(ParseScopeError::UnknownAccess(other.to_owned())),
        };
        Ok(Scope::new(family.parse()?, access))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of granted or declared scopes, kept normalised: one entry per family, at the
/// highest access given (so `contacts:read` + `contacts:write` is `contacts:write`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Scope>", into = "Vec<Scope>")]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut set = ScopeSet::default();
        for scope in scopes {
            set.insert(scope);
        }
        set
    }

    pub fn insert(&mut self, scope: Scope) {
        if let Some(held) = self.0.iter().find(|s| s.family == scope.family).copied() {
            if held.access >= scope.access {
                return;
            }
            self.0.remove(&held);
        }
        self.0.insert(scope);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn covers(&self, required: &Scope) -> bool {
        self.0.iter().any(|held| held.covers(required))
    }

    /// The first required scope this set does not cover, if any.
    pub fn first_missing<'a>(
        &self,
        required: impl IntoIterator<Item = &'a Scope>,
    ) -> Option<Scope> {
        required.into_iter().find(|r| !self.covers(r)).copied()
    }

    /// The highest tier among the scopes; an empty set is low.
    pub fn risk_tier(&self) -> RiskTier {
        self.0
            .iter()
            .map(Scope::risk_tier)
            .max()
            .unwrap_or(RiskTier::Low)
    }

    /// Every family of the catalogue at write: the seed's "Mistake #1".
    pub fn is_full_account_access(&self) -> bool {
        crate::catalog::FAMILIES
            .iter()
            .all(|info| self.covers(&Scope::new(info.family, Access::Write)))
    }

    pub fn write_scopes(&self) -> Vec<Scope> {
        self.0
            .iter()
            .filter(|s| s.access == Access::Write)
            .copied()
            .collect()
    }
}

impl From<Vec<Scope>> for ScopeSet {
    fn from(scopes: Vec<Scope>) -> Self {
        ScopeSet::new(scopes)
    }
}

impl From<ScopeSet> for Vec<Scope> {
    fn from(set: ScopeSet) -> Self {
        set.0.into_iter().collect()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet::new(iter)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(scopes: &[&str]) -> ScopeSet {
        scopes.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn seed_table_tiers() {
        for (scope, tier) in [
            ("calendar:read", RiskTier::Low),
            ("matters:read", RiskTier::Low),
            ("contacts:read", RiskTier::Low),
            ("activities:read", RiskTier::Medium),
            ("communications:read", RiskTier::Medium),
            ("billing:write", RiskTier::High),
            ("documents:read", RiskTier::High),
            ("trust_accounts:read", RiskTier::VeryHigh),
            ("trust_accounts:write", RiskTier::VeryHigh),
        ] {
            assert_eq!(scope.parse::<Scope>().unwrap().risk_tier(), tier, "{scope}");
        }
    }

    #[test]
    fn rule_for_unrated_scopes() {
        for (scope, tier) in [
            ("contacts:write", RiskTier::High),
            ("tasks:write", RiskTier::High),
            ("users:read", RiskTier::Low),
            ("custom_fields:read", RiskTier::Low),
            ("tasks:read", RiskTier::Medium),
            ("billing:read", RiskTier::Medium),
            ("documents:write", RiskTier::High),
        ] {
            assert_eq!(scope.parse::<Scope>().unwrap().risk_tier(), tier, "{scope}");
        }
    }

    #[test]
    fn write_implies_read_and_sets_normalise() {
        let grant = set(&["contacts:read", "contacts:write", "matters:read"]);
        assert_eq!(grant.len(), 2);
        assert!(grant.covers(&"contacts:read".parse().unwrap()));
        assert!(!grant.covers(&"matters:write".parse().unwrap()));
        assert_eq!(
            grant.first_missing(&["matters:write".parse().unwrap()]),
            Some("matters:write".parse().unwrap())
        );
    }

    #[test]
    fn reference_integrations_have_the_documented_tiers() {
        assert_eq!(set(&["contacts:read"]).risk_tier(), RiskTier::Low);
        assert_eq!(
            set(&["calendar:read", "matters:read", "activities:write"]).risk_tier(),
            RiskTier::High
        );
        let analytics = set(&[
            "calendar:read",
            "matters:read",
            "billing:read",
            "documents:read",
            "trust_accounts:read",
            "communications:read",
        ]);
        assert_eq!(analytics.risk_tier(), RiskTier::VeryHigh);
        assert!(!analytics.is_full_account_access());
    }

    #[test]
    fn full_account_access_needs_every_family_at_write() {
        let all: ScopeSet = crate::FAMILIES
            .iter()
            .map(|f| Scope::new(f.family, Access::Write))
            .collect();
        assert!(all.is_full_account_access());
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(
            "contacts".parse::<Scope>(),
            Err(ParseScopeError::Malformed("contacts".into()))
        );
        assert_eq!(
            "bogus:read".parse::<Scope>(),
            Err(ParseScopeError::UnknownFamily("bogus".into()))
        );
        assert_eq!(
            "contacts:admin".parse::<Scope>(),
            Err(ParseScopeError::UnknownAccess("admin".into()))
        );
    }
}
