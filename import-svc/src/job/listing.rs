//! What a job reads from Clio: the fields it asks for per resource, the first page of
//! each resource's listing, and the list reader the importer's settings describe. Reading
//! itself (paging, the rate limit, retries, hostile answers) is [`clio_api::listing`].
//!
//! Without `fields`, Clio returns only `id` and `etag`, so every resource has a default
//! list covering what the tables and consumers need; a job may add its own
//! ([`clio_api::fields`] checks their syntax and builds the parameter).

use std::time::Duration;

use chrono::{DateTime, Utc};
use clio_api::{ClioError, HttpSettings, ListQuery, Lister, ListingSettings};
use scope_catalog::Resource;
use url::Url;

use super::spec::JobSpec;
use crate::config::ImporterConfig;

/// The Clio list reader the importer's settings describe.
pub fn lister(config: &ImporterConfig) -> Result<Lister, ClioError> {
    Lister::new(
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        },
        ListingSettings {
            rate_limit_reserve: config.rate_limit_reserve,
            max_page_attempts: config.max_page_attempts,
            backoff_base: Duration::from_millis(config.backoff_base_ms),
            max_page_bytes: config.max_page_bytes,
            max_record_bytes: config.max_record_bytes,
        },
    )
}

/// The first page of `resource`'s listing for `spec` under `api_base`: its records (the
/// default fields and the job's extras) updated since `since`, or only their ids
/// (`ids_only`, to find deletions), `page_size` to a page.
pub fn first_page_url(
    api_base: &Url,
    resource: Resource,
    spec: &JobSpec,
    since: Option<DateTime<Utc>>,
    ids_only: bool,
    page_size: u32,
) -> Result<Url, url::ParseError> {
    let extra = spec
        .extra_fields
        .get(&resource)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let fields = if ids_only {
        "id".to_owned()
    } else {
        fields_param(resource, extra)
    };
    ListQuery {
        resource: resource.as_str(),
        fields: &fields,
        limit: page_size,
        updated_since: since,
        filters: &spec.filters,
    }
    .first_page_url(api_base)
}

/// What the importer always asks for, per resource (nesting one level deep, as Clio allows).
pub fn default_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Contacts => &[
            "id",
            "etag",
            "name",
            "first_name",
            "last_name",
            "type",
            "primary_email_address",
            "primary_phone_number",
            "is_client",
            "created_at",
            "updated_at",
        ],
        Resource::Matters => &[
            "id",
            "etag",
            "display_number",
            "description",
            "status",
            "open_date",
            "close_date",
            "billable",
            "client{id,name}",
            "practice_area{id,name}",
            "created_at",
            "updated_at",
        ],
        Resource::CalendarEntries => &[
            "id",
            "etag",
            "summary",
            "description",
            "location",
            "start_at",
            "end_at",
            "all_day",
            "matter{id}",
            "calendar_owner{id}",
            "created_at",
            "updated_at",
        ],
        Resource::Activities => &[
            "id",
            "etag",
            "type",
            "date",
            "quantity",
            "price",
            "total",
            "note",
            "billed",
            "non_billable",
            "matter{id}",
            "user{id}",
            "calendar_entry{id}",
            "created_at",
            "updated_at",
        ],
        Resource::Users => &[
            "id",
            "name",
            "email",
            "enabled",
            "roles",
            "subscription_type",
            "created_at",
            "updated_at",
        ],
    }
}

/// The `fields` parameter of `resource`'s listing: the defaults plus a job's extras.
pub fn fields_param(resource: Resource, extra: &[String]) -> String {
    clio_api::fields::fields_param(default_fields(resource), extra)
}

#[cfg(test)]
mod tests {
    use clio_api::fields::is_valid_field;

    use super::*;

    #[test]
    fn every_default_field_is_a_clio_field_name() {
        for resource in Resource::ALL {
            assert!(
                default_fields(resource).iter().all(|f| is_valid_field(f)),
                "{resource}"
            );
        }
    }

    #[test]
    fn extras_are_appended_once() {
        let param = fields_param(Resource::Users, &["email".into(), "phone".into()]);
        assert!(param.ends_with(",updated_at,phone"), "{param}");
    }
}
