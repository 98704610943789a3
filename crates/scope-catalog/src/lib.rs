//! The scope catalogue of `shared/scopes.md`, kept here as data and nowhere else.
//!
//! Scopes are `<family>:<access>`; `write` implies `read`. Every service and report asks
//! this crate for a scope's risk tier, for what an import resource needs, and whether a
//! grant covers a request.

mod catalog;
mod resource;
mod scope;
mod wire;

pub use catalog::{FAMILIES, FamilyInfo, family_info};
pub use resource::{Resource, UnknownResource};
pub use scope::{Access, Family, ParseScopeError, RiskTier, Scope, ScopeSet};
pub use wire::WireScopeError;
