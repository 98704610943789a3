//! Conversions between the catalogue types and the wire types of `proto`.

use proto::common::v1 as pb;

use crate::scope::{Access, Family, RiskTier, Scope, ScopeSet};

/// A wire scope that is not in the catalogue. `field` names the request field so an RPC
/// can answer `InvalidArgument` pointing at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct WireScopeError {
    pub field: String,
    pub problem: String,
}

impl Scope {
    /// Parses a wire scope; `field` is the path used in the error (`declared_scopes[2]`).
    pub fn from_wire(wire: &pb::Scope, field: &str) -> Result<Scope, WireScopeError> {
        let family: Family = wire.family.parse().map_err(|e| WireScopeError {
            field: format!("{field}.family"),
            problem: format!("{e}"),
        })?;
        let access = match pb::Access::try_from(wire.access) {
            Ok(pb::Access::Read) => Access::Read,
            Ok(pb::Access::Write) => Access::Write,
            _ => {
                return Err(WireScopeError {
                    field: format!("{field}.access"),
                    problem: "must be ACCESS_READ or ACCESS_WRITE".into(),
                });
            }
        };
        Ok(Scope::new(family, access))
    }

    pub fn to_wire(self) -> pb::Scope {
        pb::Scope {
            family: self.family.as_str().to_owned(),
            access: match self.access {
                Access::Read => pb::Access::Read,
                Access::Write => pb::Access::Write,
            } as i32,
        }
    }
}

impl ScopeSet {
    pub fn from_wire(wire: &[pb::Scope], field: &str) -> Result<ScopeSet, WireScopeError> {
        wire.iter()
            .enumerate()
            .map(|(i, s)| Scope::from_wire(s, &format!("{field}[{i}]")))
            .collect()
    }

    pub fn to_wire(&self) -> Vec<pb::Scope> {
        self.iter().map(|s| s.to_wire()).collect()
    }
}

impl From<RiskTier> for pb::RiskTier {
    fn from(tier: RiskTier) -> Self {
        match tier {
            RiskTier::Low => pb::RiskTier::Low,
            RiskTier::Medium => pb::RiskTier::Medium,
            RiskTier::High => pb::RiskTier::High,
            RiskTier::VeryHigh => pb::RiskTier::VeryHigh,
        }
    }
}

impl RiskTier {
    pub fn from_wire(tier: i32) -> Option<RiskTier> {
        match pb::RiskTier::try_from(tier).ok()? {
            pb::RiskTier::Unspecified => None,
            pb::RiskTier::Low => Some(RiskTier::Low),
            pb::RiskTier::Medium => Some(RiskTier::Medium),
            pb::RiskTier::High => Some(RiskTier::High),
            pb::RiskTier::VeryHigh => Some(RiskTier::VeryHigh),
        }
    }
}
