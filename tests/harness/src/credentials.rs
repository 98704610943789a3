//! Service credentials for tests: one caller per role, plus one with no useful role.

use secrecy::SecretString;
use service_runtime::Role;
use service_runtime::config::CallerCredential;

#[derive(Debug, Clone)]
pub struct TestCaller {
    pub name: &'static str,
    pub token: String,
    pub roles: Vec<Role>,
}

/// A caller per role (`operator`, `compliance`, ...) and `nobody` (data_reader only).
pub fn test_callers() -> Vec<TestCaller> {
    let roles = [
        ("operator", Role::Operator),
        ("compliance", Role::Compliance),
        ("connector", Role::Connector),
        ("import", Role::Import),
        ("audit_writer", Role::AuditWriter),
        ("job_submitter", Role::JobSubmitter),
        ("data_reader", Role::DataReader),
    ];
    roles
        .into_iter()
        .map(|(name, role)| TestCaller {
            name,
            token: format!("test-credential-{name}-0123456789"),
            roles: vec![role],
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
            token: SecretString::from(c.token),
            roles: c.roles,
        })
        .collect()
}
