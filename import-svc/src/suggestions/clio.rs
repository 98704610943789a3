//! The Clio calls of billing suggestions, each through the connection's rate gate (shared
//! with its import jobs): list pages, the activity linked to a calendar entry, whether a
//! person sees a matter, and creating a time entry.

use std::collections::BTreeMap;
use std::time::Duration;

use clio_api::{
    ClioError, CreateRequest, Creator, Credentials, ListQuery, Lister, Page, PageRequest,
    RateGates, WaitObserver,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::leases::Lease;

/// The rate-limit waits of these calls are not reported (the call just takes longer).
struct NoWaits;

impl WaitObserver for NoWaits {
    fn waited(&self, _: Duration) {}
}

#[derive(Clone)]
pub struct ClioCalls {
    pub lister: Lister,
    pub creator: Creator,
    pub gates: RateGates,
    /// Requests kept in reserve below Clio's remaining count (the importer's).
    pub reserve: u32,
}

impl ClioCalls {
    /// One list page through `connection_id`'s gate (retried inside on 5xx and timeouts).
    pub async fn page(
        &self,
        lease: &Lease,
        connection_id: &str,
        url: &Url,
    ) -> Result<Page, ClioError> {
        let gate = self.gates.gate(connection_id);
        let never = CancellationToken::new();
        self.lister
            .page(&PageRequest {
                url,
                api_base: &lease.api_base,
                token: &lease.token,
                gate: &gate,
                budget: lease.budget(),
                cancel: &never,
                observer: &NoWaits,
            })
            .await
    }

    /// The first page of `resource` filtered by `filters`, with `fields`.
    async fn first(
        &self,
        lease: &Lease,
        connection_id: &str,
        resource: &str,
        fields: &str,
        filters: &[(&str, String)],
    ) -> Result<Page, ClioError> {
        let filters: BTreeMap<String, String> = filters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let url = ListQuery {
            resource,
            fields,
            limit: 200,
            updated_since: None,
            filters: &filters,
        }
        .first_page_url(&lease.api_base)
        .map_err(|e| ClioError::Other {
            status: None,
            detail: format!("bad {resource} URL: {e}"),
        })?;
        self.page(lease, connection_id, &url).await
    }

    /// The time entry Clio holds for the calendar entry, if any (its id), and whether any
    /// activity at all links to it.
    pub async fn linked_activity(
        &self,
        lease: &Lease,
        connection_id: &str,
        calendar_entry_id: &str,
    ) -> Result<Linked, ClioError> {
        let page = self
            .first(
                lease,
                connection_id,
                "activities",
                "id,type",
                &[("calendar_entry_id", calendar_entry_id.to_owned())],
            )
            .await?;
        let time_entry = page.records.iter().find_map(|activity| {
            (activity.get("type").and_then(Value::as_str) == Some("TimeEntry"))
                .then(|| activity.get("id").and_then(Value::as_i64))
                .flatten()
        });
        Ok(Linked {
            any: !page.records.is_empty() || !page.skipped.is_empty(),
            time_entry,
        })
    }

    /// Whether the lease's Clio user sees the matter (it is in their matter list).
    pub async fn sees_matter(
        &self,
        lease: &Lease,
        connection_id: &str,
        matter_id: i64,
    ) -> Result<bool, ClioError> {
        let page = self
            .first(
                lease,
                connection_id,
                "matters",
                "id",
                &[("ids[]", matter_id.to_string())],
            )
            .await?;
        Ok(page
            .records
            .iter()
            .any(|m| m.get("id").and_then(Value::as_i64) == Some(matter_id)))
    }

    /// Creates one time entry (once: see [`clio_api::writes`]); its Clio id.
    pub async fn create_time_entry(
        &self,
        lease: &Lease,
        connection_id: &str,
        record: &Value,
    ) -> Result<i64, ClioError> {
        let gate = self.gates.gate(connection_id);
        let created = self
            .creator
            .create(&CreateRequest {
                resource: "activities",
                record,
                fields: "id,type,calendar_entry{id}",
                credentials: Credentials {
                    api_base: &lease.api_base,
                    token: &lease.token,
                    gate: &gate,
                    budget: lease.budget(),
                    reserve: self.reserve,
                },
            })
            .await?;
        created
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| ClioError::Other {
                status: None,
                detail: "the created activity has no id".into(),
            })
    }
}

/// What links to a calendar entry in Clio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    pub any: bool,
    pub time_entry: Option<i64>,
}
