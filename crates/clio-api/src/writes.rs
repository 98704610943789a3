//! Creating a record in Clio (`POST /api/v4/<resource>.json`), once per call, and reading
//! one back by id.
//!
//! A create is not retried here: when Clio does not answer, it may still have created the
//! record, and only the caller knows how to look for it before trying again (a time entry
//! by its calendar entry link). So a timeout, a dropped connection or a 5xx is
//! [`ClioError::Transient`] and the caller decides; a 4xx is Clio refusing the record for
//! good ([`ClioError::Rejected`] with Clio's own message, say a validation error).

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{HttpSettings, http_client};
use crate::error::ClioError;
use crate::one_call::{Credentials, api_url, send};

/// One record to create, with the token and what paces it.
pub struct CreateRequest<'a> {
    /// The resource's path name (`activities`).
    pub resource: &'a str,
    /// The record's fields (sent as `{"data": record}`).
    pub record: &'a Value,
    /// The fields of the created record to answer with (`fields`).
    pub fields: &'a str,
    pub credentials: Credentials<'a>,
}

/// Creates records in Clio, and reads one back by id. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Creator {
    http: reqwest::Client,
}

impl Creator {
    pub fn new(http: HttpSettings) -> Result<Self, ClioError> {
        Ok(Creator {
            http: http_client(http)?,
        })
    }

    /// POSTs the record once (after the token's rate gate lets it); the created record as
    /// Clio answers it (`data`).
    pub async fn create(&self, request: &CreateRequest<'_>) -> Result<Value, ClioError> {
        let mut url = api_url(request.credentials.api_base, request.resource)?;
        url.query_pairs_mut().append_pair("fields", request.fields);
        let body = json!({ "data": request.record });
        send(
            &self.http,
            &request.credentials,
            Method::POST,
            url,
            Some(&body),
            false,
        )
        .await?
        .ok_or_else(|| ClioError::Other {
            status: None,
            detail: "the answer to a create has no record".into(),
        })
    }

    /// GETs one record of `resource` by id with `fields` (a targeted read, say of a
    /// record a webhook named); `None` when Clio has no such record (404).
    pub async fn read(
        &self,
        credentials: &Credentials<'_>,
        resource: &str,
        id: &str,
        fields: &str,
    ) -> Result<Option<Value>, ClioError> {
        let mut url = api_url(credentials.api_base, &format!("{resource}/{id}"))?;
        url.query_pairs_mut().append_pair("fields", fields);
        send(&self.http, credentials, Method::GET, url, None, true).await
    }
}
