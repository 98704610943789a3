//! Who may see and change which jobs and records, beyond the per-RPC roles of
//! [`crate::access_policy`].
//!
//! - A caller configured with `tenants` (`[[service.callers]] tenants = ["firm-1"]`) sees
//!   and submits jobs only for connections of those firms, and reads only the records of
//!   Clio accounts whose jobs ran for them. A job whose firm is not known yet (auth-svc has
//!   not been asked) is visible to the caller that submitted it.
//! - A job submitter cancels only the jobs it submitted; an operator cancels any (within
//!   its tenants).
//!
//! Every refusal is `PERMISSION_DENIED` and recorded as an ACCESS_DENIED audit event,
//! like the refusals of the per-RPC policy.

use std::sync::Arc;

use service_runtime::Role;
use service_runtime::caller_auth::{Caller, Denial, DenialSink};
use tonic::Status;

use crate::IMPORT_SERVICE;
use crate::job::store::JobRow;

/// Records refusals (the service's audit denial sink).
#[derive(Clone)]
pub struct Refusals(pub Arc<dyn DenialSink>);

impl Refusals {
    /// Audits the refusal of ImportService's `method` to `caller` and returns the answer
    /// to send.
    pub fn refuse(&self, caller: &Caller, method: &str, reason: String) -> Status {
        self.refuse_in(IMPORT_SERVICE, caller, method, reason)
    }

    /// [`Refusals::refuse`] for a method of another of import-svc's services.
    pub fn refuse_in(
        &self,
        service: &str,
        caller: &Caller,
        method: &str,
        reason: String,
    ) -> Status {
        self.0.denied(Denial {
            method: format!("/{service}/{method}"),
            caller: Some(caller.name.clone()),
            code: tonic::Code::PermissionDenied,
            reason: reason.clone(),
        });
        Status::permission_denied(reason)
    }
}

/// Whether `caller` may see the job (GetJob, WatchJob, ListJobs).
pub fn may_see_job(caller: &Caller, job: &JobRow) -> Result<(), String> {
    if caller.tenants.is_none() || submitted_by(caller, job) {
        return Ok(());
    }
    match job.tenant.as_deref() {
        Some(tenant) if caller.may_access_tenant(tenant) => Ok(()),
        Some(tenant) => Err(format!(
            "job {} belongs to tenant {tenant:?}, outside this caller's tenants",
            job.job_id
        )),
        None => Err(format!(
            "job {}'s tenant is not known yet and this caller did not submit it",
            job.job_id
        )),
    }
}

/// Whether `caller` may cancel the job.
pub fn may_cancel(caller: &Caller, job: &JobRow) -> Result<(), String> {
    may_see_job(caller, job)?;
    if caller.has(Role::Operator) || submitted_by(caller, job) {
        return Ok(());
    }
    Err(format!(
        "a job submitter may cancel only the jobs it submitted; job {} was submitted by {}",
        job.job_id,
        job.submitted_by.as_deref().unwrap_or("a queue producer")
    ))
}

/// The ListJobs restriction for `caller`: its tenants, and its own submissions.
pub fn job_visibility(caller: &Caller) -> Option<(Vec<String>, String)> {
    caller
        .tenants
        .clone()
        .map(|tenants| (tenants, caller.name.clone()))
}

/// Whether `caller` may read the records of an account whose jobs ran for `tenants`.
pub fn may_read_account(caller: &Caller, account: &str, tenants: &[String]) -> Result<(), String> {
    if caller.tenants.is_none() || tenants.iter().any(|t| caller.may_access_tenant(t)) {
        return Ok(());
    }
    Err(format!(
        "Clio account {account:?} belongs to no tenant of this caller"
    ))
}

fn submitted_by(caller: &Caller, job: &JobRow) -> bool {
    job.submitted_by.as_deref() == Some(caller.name.as_str())
}
