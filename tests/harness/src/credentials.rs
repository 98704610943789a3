//! Service credentials for tests: one caller per role, a second job submitter, and callers
//! limited to the tenant `firm-2` (the stacks connect people of `firm-1`).

use secrecy::SecretString;
use service_runtime::Role;
use service_runtime::config::CallerCredential;

#[derive(Debug, Clone)]
pub struct TestCaller {
    pub name: &'static str,
    pub token: String,
    pub roles: Vec<Role>,
    /// `None`: every tenant.
    pub tenants: Option<Vec<&'static str>>,
}

/// A caller per role (`operator`, `compliance`, ...), `other_submitter` (a second job
/// submitter), `firm2_submitter` and `firm2_reader`, limited to tenant `firm-2`, and the
/// audit writers of auth-svc and import-svc (`auth_writer`, `import_writer`), which
/// audit-svc test configs grant their service's sources and kinds, billing approvers
/// (`billing_approver`, and `firm2_approver` of `firm-2`) and two people reviewing their
/// own billing suggestions (`bob@firm.example`, `eve@firm.example`), and two compliance
/// officers, an operator and a data reader as the dashboard's people (`carol@firm.example`,
/// `rachel@firm.example`, `olivia@firm.example`, `dana@firm.example`).
pub fn test_callers() -> Vec<TestCaller> {
    let firm2 = || Some(vec!["firm-2"]);
    let callers = [
        ("operator", Role::Operator, None),
        ("compliance", Role::Compliance, None),
        // A second compliance credential: the one that generated a review may not attest it.
        ("reviewer", Role::Compliance, None),
        ("connector", Role::Connector, None),
        ("import", Role::Import, None),
        ("audit_writer", Role::AuditWriter, None),
        ("job_submitter", Role::JobSubmitter, None),
        ("data_reader", Role::DataReader, None),
        ("other_submitter", Role::JobSubmitter, None),
        ("firm2_submitter", Role::JobSubmitter, firm2()),
        ("firm2_reader", Role::DataReader, firm2()),
        ("auth_writer", Role::AuditWriter, None),
        ("import_writer", Role::AuditWriter, None),
        ("billing_approver", Role::BillingApprover, None),
        ("firm2_approver", Role::BillingApprover, firm2()),
        // People reviewing the suggestions of their own connections: a caller's name is
        // the principal it connected as.
        ("bob@firm.example", Role::BillingReviewer, None),
        ("eve@firm.example", Role::BillingReviewer, None),
        // People signing in to the dashboard, which acts for each with their credential.
        ("carol@firm.example", Role::Compliance, None),
        ("rachel@firm.example", Role::Compliance, None),
        ("olivia@firm.example", Role::Operator, None),
        ("dana@firm.example", Role::DataReader, None),
    ];
    callers
        .into_iter()
        .map(|(name, role, tenants)| TestCaller {
            name,
            token: format!("test-credential-{name}-0123456789"),
            roles: vec![role],
            tenants,
        })
        .collect()
}

/// The token of the test caller with this name.
pub fn token_of(name: &str) -> String {
    test_callers()
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.token)
        .unwrap_or_else(|| panic!("no test caller {name}"))
}

/// The credentials as service config.
pub fn caller_config() -> Vec<CallerCredential> {
    test_callers()
        .into_iter()
        .map(|c| CallerCredential {
            name: c.name.to_owned(),
            token: Some(SecretString::from(c.token)),
            tls_subject: None,
            roles: c.roles,
            tenants: c
                .tenants
                .map(|t| t.into_iter().map(str::to_owned).collect()),
        })
        .collect()
}

/// The test callers as the value of a service config file's `service.callers` (an inline
/// TOML array), for services started as processes.
pub fn callers_toml() -> String {
    let callers: Vec<String> = test_callers()
        .into_iter()
        .map(|c| {
            let roles: Vec<String> = c
                .roles
                .iter()
                .map(|r| format!("{:?}", r.as_str()))
                .collect();
            let tenants = c
                .tenants
                .map(|t| format!(", tenants = {t:?}"))
                .unwrap_or_default();
            format!(
                "{{ name = {:?}, token = {:?}, roles = [{}]{tenants} }}",
                c.name,
                c.token,
                roles.join(", ")
            )
        })
        .collect();
    format!("[{}]", callers.join(", "))
}
