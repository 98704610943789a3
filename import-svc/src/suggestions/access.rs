//! Who may act on whose billing suggestions, beyond the per-RPC roles of
//! [`crate::access_policy`].
//!
//! - A `billing_reviewer` is a person's credential: it acts only on the suggestions of
//!   connections it made (whose owner, the connection's principal, is its name).
//! - A `billing_approver` acts on every connection of its tenants; an `operator` may
//!   detect and read them, `compliance` read them.
//!
//! Every refusal is `PERMISSION_DENIED` and audited (`access::Refusals`).

use service_runtime::Role;
use service_runtime::caller_auth::Caller;

/// Whether `caller` may detect, approve or reject suggestions of a connection of `owner`
/// in `tenant`. An operator may detect, not decide: `deciding` says which is asked.
pub fn may_act(caller: &Caller, owner: &str, tenant: &str, deciding: bool) -> Result<(), String> {
    if !caller.may_access_tenant(tenant) {
        return Err(format!(
            "the connection belongs to tenant {tenant:?}, outside this caller's tenants"
        ));
    }
    if caller.has(Role::BillingApprover) || (!deciding && caller.has(Role::Operator)) {
        return Ok(());
    }
    if caller.has(Role::BillingReviewer) && caller.name == owner {
        return Ok(());
    }
    Err(format!(
        "{} may act only on billing suggestions of its own connections; this one is {owner}'s",
        caller.name
    ))
}

/// Whether `caller` sees every owner's suggestions (within its tenants), or only its own.
pub fn sees_every_owner(caller: &Caller) -> bool {
    caller.has(Role::BillingApprover) || caller.has(Role::Operator) || caller.has(Role::Compliance)
}

/// Whether `caller` may read a suggestion of `owner` in `tenant`.
pub fn may_read(caller: &Caller, owner: &str, tenant: &str) -> Result<(), String> {
    if !caller.may_access_tenant(tenant) {
        return Err(format!(
            "the suggestion belongs to tenant {tenant:?}, outside this caller's tenants"
        ));
    }
    if sees_every_owner(caller) || caller.name == owner {
        return Ok(());
    }
    Err(format!(
        "{} may read only billing suggestions of its own connections",
        caller.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, role: Role, tenants: Option<&[&str]>) -> Caller {
        Caller {
            name: name.into(),
            roles: vec![role],
            tenants: tenants.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn a_person_acts_on_their_own_connections_only() {
        let bob = caller("bob@firm", Role::BillingReviewer, None);
        assert!(may_act(&bob, "bob@firm", "firm-1", true).is_ok());
        let refused = may_act(&bob, "eve@firm", "firm-1", true).unwrap_err();
        assert!(refused.contains("eve@firm's"), "{refused}");
        assert!(may_read(&bob, "eve@firm", "firm-1").is_err());
        assert!(!sees_every_owner(&bob));
    }

    #[test]
    fn an_approver_acts_within_its_tenants_and_an_operator_only_detects() {
        let approver = caller("billing", Role::BillingApprover, Some(&["firm-2"]));
        assert!(may_act(&approver, "eve@firm", "firm-2", true).is_ok());
        assert!(may_act(&approver, "eve@firm", "firm-1", true).is_err());
        assert!(may_read(&approver, "eve@firm", "firm-1").is_err());
        let operator = caller("ops", Role::Operator, None);
        assert!(may_act(&operator, "eve@firm", "firm-1", false).is_ok());
        assert!(may_act(&operator, "eve@firm", "firm-1", true).is_err());
        let compliance = caller("audit", Role::Compliance, None);
        assert!(may_read(&compliance, "eve@firm", "firm-1").is_ok());
        assert!(may_act(&compliance, "eve@firm", "firm-1", false).is_err());
    }
}
