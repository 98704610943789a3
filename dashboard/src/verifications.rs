//! The last chain verification made through the dashboard, per tenant, so the overview
//! can say when the audit log was last checked, by whom, and what was found. Kept in
//! memory: audit-svc keeps no record of who verified (a verification changes nothing).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Verification {
    pub at: DateTime<Utc>,
    pub by: String,
    pub ok: bool,
    pub events_checked: u64,
    pub checkpoints_checked: u64,
    /// "#30 signed at ...", or "none yet".
    pub last_checkpoint: String,
}

#[derive(Default)]
pub struct Verifications {
    by_tenant: Mutex<HashMap<String, Verification>>,
}

impl Verifications {
    pub fn record(&self, tenant: &str, verification: Verification) {
        self.by_tenant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.to_owned(), verification);
    }

    pub fn last(&self, tenant: &str) -> Option<Verification> {
        self.by_tenant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }
}
