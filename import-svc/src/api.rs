//! The `ImportService` gRPC handlers.
//!
//! Every string a caller sends is checked before it is used (the rules of
//! [`spec`]: no NUL or control character, a length limit), and refused as
//! `INVALID_ARGUMENT` naming the field. Postgres refusing a value (SQLSTATE class 22) is
//! the caller's data, not an outage: `INVALID_ARGUMENT` too, never `UNAVAILABLE`.

use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use proto::imports::v1 as pb;
use proto::imports::v1::import_service_server::ImportService;
use proto::queue::{JOB_ROUTING_KEY, content_type};
use scope_catalog::Resource;
use service_runtime::caller_auth::Caller;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::access::{self, Refusals};
use crate::audit::{Auditor, JobContext};
use crate::error::ApiError;
use crate::job::checkpoints;
use crate::job::spec::{
    self, MAX_FREE_TEXT_CHARS, MAX_ID_CHARS, MAX_RESOURCE_CHARS, check_free_text, check_text,
    quoted,
};
use crate::job::store::{self, JobFilter, JobStatus};
use crate::leases::{LeaseError, Leases};
use crate::metrics::ImportMetrics;
use crate::queue::publisher::{Outgoing, Publisher};
use crate::queue::topology::Topology;
use crate::records::{self, RecordQuery};
use crate::webhooks::manager::Webhooks;
use crate::webhooks::store::SubscriptionRow;
use proto::time::timestamp;

mod watch;

const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 100;

#[derive(Clone)]
pub struct Api {
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    pub shutdown: CancellationToken,
    pub audit: Auditor,
    /// auth-svc, for the tenant of a connection a tenant-limited caller submits for.
    pub leases: Leases,
    pub refusals: Refusals,
    pub metrics: ImportMetrics,
    /// Subscriptions to Clio's webhooks; `None` when no receiver is configured.
    pub webhooks: Option<crate::webhooks::manager::Webhooks>,
}

/// A one-line string of the request, checked by the job rules ([`check_text`]).
fn checked<'a>(field: &str, text: &'a str, max_chars: usize) -> Result<&'a str, ApiError> {
    check_text(text, max_chars).map_err(|problem| ApiError::invalid(field, problem))?;
    Ok(text)
}

fn parse_job_id(text: &str) -> Result<Uuid, ApiError> {
    let text = checked("job_id", text.trim(), MAX_ID_CHARS)?;
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid("job_id", format!("{} is not a UUID", quoted(text))))
}

fn parse_resource(text: &str) -> Result<Resource, ApiError> {
    checked("resource", text, MAX_RESOURCE_CHARS)?
        .parse()
        .map_err(|e| ApiError::invalid("resource", format!("{e}")))
}

/// Page tokens are ours (a time and a job id, or a Clio id), so they are short.
const MAX_PAGE_TOKEN_CHARS: usize = 256;

fn to_datetime(
    ts: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    ts.map(|t| proto::time::date_time(&t).ok_or_else(|| ApiError::invalid(field, "out of range")))
        .transpose()
}

fn page_size(requested: u32) -> i64 {
    i64::from(if requested == 0 {
        DEFAULT_PAGE
    } else {
        requested.min(MAX_PAGE)
    })
}

impl Api {
    /// Requests the cancel; a queued job ends here, with its audit event in the same
    /// transaction (a running one ends, and is recorded, at its next page).
    async fn cancel(&self, job_id: Uuid, reason: &str, caller: &str) -> Result<(), ApiError> {
        let mut tx = self.pool.begin().await?;
        let (row, cancelled_now) = store::request_cancel(&mut tx, job_id, reason, caller)
            .await?
            .ok_or(ApiError::JobNotFound(job_id))?;
        if cancelled_now {
            self.audit
                .job_ended(&mut tx, &JobContext::of_row(&row), &row)
                .await?;
        }
        tx.commit().await?;
        self.audit.committed();
        if cancelled_now {
            self.metrics.job_ended(JobStatus::Cancelled);
        }
        Ok(())
    }

    async fn job_view(&self, job_id: Uuid) -> Result<pb::Job, ApiError> {
        Ok(self.job_row_and_view(job_id).await?.1)
    }

    /// The job as stored and as the API shows it.
    async fn job_row_and_view(&self, job_id: Uuid) -> Result<(store::JobRow, pb::Job), ApiError> {
        let job = store::get(&self.pool, job_id)
            .await?
            .ok_or(ApiError::JobNotFound(job_id))?;
        let resources = checkpoints::resource_rows(&self.pool, job_id).await?;
        let view = store::to_wire(&job, &resources);
        Ok((job, view))
    }

    async fn submit(
        &self,
        caller: &Caller,
        request: pb::SubmitJobRequest,
    ) -> Result<pb::SubmitJobResponse, ApiError> {
        let wire = request
            .job
            .ok_or_else(|| ApiError::invalid("job", "must be set"))?;
        let spec = spec::validate(wire, true)
            .map_err(|e| ApiError::invalid(format!("job.{}", e.field), e.problem))?;
        let tenant = self.submit_tenant(caller, &spec.connection_id).await?;
        let created = store::insert_queued(&self.pool, &spec).await?;
        if created {
            store::record_submitter(&self.pool, spec.job_id, &caller.name, tenant.as_deref())
                .await?;
        }
        let body = prost::Message::encode_to_vec(&spec.to_wire());
        let job_id = spec.job_id.to_string();
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: &self.topology.names.jobs_exchange,
                routing_key: JOB_ROUTING_KEY,
                body: &body,
                content_type: content_type::PROTOBUF,
                message_id: Some(&job_id),
                // The job runs in the trace of the call that submitted it.
                headers: crate::queue::trace_headers::current(),
                mandatory: true,
            })
            .await;
        if let Err(error) = published {
            self.forget_unqueued(spec.job_id, created).await;
            return Err(error.into());
        }
        tracing::info!(job_id = %spec.job_id, connection_id = %spec.connection_id, "job submitted");
        Ok(pb::SubmitJobResponse { job_id })
    }

    /// For a caller limited to tenants, the tenant of the connection it submits for,
    /// refused (and audited) when it is not one of them. Unlimited callers need no lookup.
    async fn submit_tenant(
        &self,
        caller: &Caller,
        connection_id: &str,
    ) -> Result<Option<String>, ApiError> {
        if caller.tenants.is_none() {
            return Ok(None);
        }
        let refuse =
            |reason: String| ApiError::Refused(self.refusals.refuse(caller, "SubmitJob", reason));
        match self.leases.connection(connection_id).await {
            Ok(connection) if caller.may_access_tenant(&connection.tenant) => {
                Ok(Some(connection.tenant))
            }
            Ok(connection) => Err(refuse(format!(
                "connection {connection_id:?} belongs to tenant {:?}, outside this caller's tenants",
                connection.tenant
            ))),
            Err(LeaseError::Unavailable(reason)) => Err(ApiError::AuthUnavailable(reason)),
            Err(LeaseError::Refused(reason) | LeaseError::Unusable(reason)) => {
                Err(refuse(format!(
                    "connection {connection_id:?} cannot be checked against this caller's tenants: {reason}"
                )))
            }
        }
    }

    /// The webhook manager and the checked connection id a webhook call is about; a
    /// tenant-limited caller only for its tenants' connections.
    async fn webhook_target(
        &self,
        caller: &Caller,
        method: &str,
        connection_id: &str,
    ) -> Result<(&Webhooks, String), Status> {
        let connection_id = checked("connection_id", connection_id.trim(), spec::MAX_ID_CHARS)?;
        if connection_id.is_empty() {
            return Err(ApiError::invalid("connection_id", "must not be empty").into());
        }
        let webhooks = self.webhooks.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "webhooks are not configured on this import-svc (webhooks.listen)",
            )
        })?;
        if caller.tenants.is_some() {
            match self.leases.connection(connection_id).await {
                Ok(connection) if caller.may_access_tenant(&connection.tenant) => {}
                Ok(connection) => {
                    return Err(self.refusals.refuse(
                        caller,
                        method,
                        format!(
                            "connection {connection_id:?} belongs to tenant {:?}, outside this caller's tenants",
                            connection.tenant
                        ),
                    ));
                }
                Err(LeaseError::Unavailable(reason)) => {
                    return Err(ApiError::AuthUnavailable(reason).into());
                }
                Err(LeaseError::Refused(reason) | LeaseError::Unusable(reason)) => {
                    return Err(self.refusals.refuse(caller, method, reason));
                }
            }
        }
        Ok((webhooks, connection_id.to_owned()))
    }

    /// The job, if `caller` may see it (refusals audited as calls of `method`).
    async fn visible_job(
        &self,
        caller: &Caller,
        method: &str,
        job_id: Uuid,
    ) -> Result<store::JobRow, ApiError> {
        let row = store::get(&self.pool, job_id)
            .await?
            .ok_or(ApiError::JobNotFound(job_id))?;
        access::may_see_job(caller, &row)
            .map_err(|reason| ApiError::Refused(self.refusals.refuse(caller, method, reason)))?;
        Ok(row)
    }

    /// Refuses (audited) a tenant-limited reader an account of another tenant.
    async fn check_account(
        &self,
        caller: &Caller,
        method: &str,
        account: &str,
    ) -> Result<(), ApiError> {
        if caller.tenants.is_none() {
            return Ok(());
        }
        let tenants = store::account_tenants(&self.pool, account).await?;
        access::may_read_account(caller, account, &tenants)
            .map_err(|reason| ApiError::Refused(self.refusals.refuse(caller, method, reason)))
    }

    /// After a failed publish: a row this call stored would otherwise stay `queued` with
    /// no message to run it. Removing it (rather than failing it) keeps the caller's retry
    /// with the same job id meaningful. A row that existed before belongs to an earlier
    /// submission whose message may still be queued, so it stays.
    async fn forget_unqueued(&self, job_id: Uuid, created: bool) {
        if !created {
            return;
        }
        match store::remove_unqueued(&self.pool, job_id).await {
            Ok(true) => tracing::warn!(%job_id, "job could not be queued; its record was removed"),
            Ok(false) => {
                tracing::warn!(%job_id, "job could not be queued, but its record has moved on (taken or cancelled) and is kept")
            }
            Err(error) => {
                tracing::error!(%job_id, %error, "job could not be queued and its record could not be removed; it stays queued")
            }
        }
    }

    async fn list_jobs(
        &self,
        caller: &Caller,
        request: pb::ListJobsRequest,
    ) -> Result<pb::ListJobsResponse, ApiError> {
        checked("connection_id", &request.connection_id, MAX_ID_CHARS)?;
        checked("page_token", &request.page_token, MAX_PAGE_TOKEN_CHARS)?;
        let before = if request.page_token.is_empty() {
            None
        } else {
            let (at, id) = request.page_token.split_once('|').ok_or_else(|| {
                ApiError::invalid("page_token", "not a token from a previous page")
            })?;
            let at = DateTime::parse_from_rfc3339(at)
                .map_err(|_| ApiError::invalid("page_token", "not a token from a previous page"))?
                .to_utc();
            let id = Uuid::parse_str(id)
                .map_err(|_| ApiError::invalid("page_token", "not a token from a previous page"))?;
            Some((at, id))
        };
        let status = match request.status {
            0 => None,
            code => Some(
                JobStatus::from_wire(code)
                    .ok_or_else(|| ApiError::invalid("status", format!("unknown status {code}")))?,
            ),
        };
        let limit = page_size(request.page_size);
        let filter = JobFilter {
            connection_id: Some(request.connection_id).filter(|c| !c.is_empty()),
            status,
            before,
            limit,
            visible_to: access::job_visibility(caller),
        };
        let rows = store::list(&self.pool, &filter).await?;
        let next_page_token = match rows.last() {
            Some(last) if i64::try_from(rows.len()).unwrap_or(0) == limit => {
                format!(
                    "{}|{}",
                    last.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    last.job_id
                )
            }
            _ => String::new(),
        };
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            let resources = checkpoints::resource_rows(&self.pool, row.job_id).await?;
            jobs.push(store::to_wire(row, &resources));
        }
        Ok(pb::ListJobsResponse {
            jobs,
            next_page_token,
        })
    }

    fn record_query(
        account: &str,
        resource: &str,
        updated_since: Option<prost_types::Timestamp>,
        include_deleted: bool,
    ) -> Result<RecordQuery, ApiError> {
        checked("clio_account_id", account.trim(), MAX_ID_CHARS)?;
        if account.trim().is_empty() {
            return Err(ApiError::invalid("clio_account_id", "must not be empty"));
        }
        Ok(RecordQuery {
            account_id: account.trim().to_owned(),
            resource: parse_resource(resource)?,
            updated_since: to_datetime(updated_since, "updated_since")?,
            include_deleted,
            after_id: None,
            limit: i64::from(DEFAULT_PAGE),
        })
    }
}

fn record_to_wire(resource: Resource, record: records::StoredRecord) -> pb::Record {
    pb::Record {
        resource: resource.as_str().to_owned(),
        clio_account_id: record.clio_account_id,
        clio_id: record.clio_id,
        etag: record.etag.unwrap_or_default(),
        updated_at: record.updated_at.map(timestamp),
        deleted: record.deleted_at.is_some(),
        data_json: record.data.to_string(),
        connection_id: record.connection_id,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ImportService for Api {
    type WatchJobStream = BoxStream<pb::JobProgress>;
    type ExportRecordsStream = BoxStream<pb::Record>;

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        Ok(Response::new(
            self.submit(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let job_id = parse_job_id(&request.get_ref().job_id)?;
        self.visible_job(Caller::of(&request)?, "GetJob", job_id)
            .await?;
        Ok(Response::new(self.job_view(job_id).await?))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        Ok(Response::new(
            Api::list_jobs(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let job_id = parse_job_id(&request.get_ref().job_id)?;
        let verified = Caller::of(&request)?;
        let reason = request.get_ref().reason.clone();
        check_free_text(&reason, MAX_FREE_TEXT_CHARS)
            .map_err(|problem| ApiError::invalid("reason", problem))?;
        let row = self.visible_job(verified, "CancelJob", job_id).await?;
        access::may_cancel(verified, &row)
            .map_err(|why| ApiError::Refused(self.refusals.refuse(verified, "CancelJob", why)))?;
        let caller = verified.name.clone();
        self.cancel(job_id, &reason, &caller).await?;
        tracing::info!(%job_id, %reason, %caller, "job cancel requested");
        Ok(Response::new(self.job_view(job_id).await?))
    }

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<BoxStream<pb::JobProgress>>, Status> {
        let job_id = parse_job_id(&request.get_ref().job_id)?;
        self.visible_job(Caller::of(&request)?, "WatchJob", job_id)
            .await?;
        let (row, first) = self.job_row_and_view(job_id).await?;
        let api = self.clone();
        // Waits before the watch began are not news.
        let stream = watch::job_stream(api, job_id, first, row.rate_limit_wait_ms);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn enable_webhooks(
        &self,
        request: Request<pb::EnableWebhooksRequest>,
    ) -> Result<Response<pb::WebhookSubscriptions>, Status> {
        let caller = Caller::of(&request)?.clone();
        let request = request.into_inner();
        let (webhooks, connection_id) = self
            .webhook_target(&caller, "EnableWebhooks", &request.connection_id)
            .await?;
        let resources = Webhooks::resources(&request.resources, "resources")?;
        let rows = webhooks
            .enable(&caller.name, &connection_id, &resources)
            .await?;
        Ok(Response::new(subscriptions(&rows)))
    }

    async fn disable_webhooks(
        &self,
        request: Request<pb::DisableWebhooksRequest>,
    ) -> Result<Response<pb::WebhookSubscriptions>, Status> {
        let caller = Caller::of(&request)?.clone();
        let request = request.into_inner();
        check_free_text(&request.reason, MAX_FREE_TEXT_CHARS)
            .map_err(|problem| ApiError::invalid("reason", problem))?;
        let (webhooks, connection_id) = self
            .webhook_target(&caller, "DisableWebhooks", &request.connection_id)
            .await?;
        let resources = Webhooks::resources(&request.resources, "resources")?;
        let reason = match request.reason.trim() {
            "" => "disabled",
            reason => reason,
        };
        let rows = webhooks
            .disable(&caller.name, &connection_id, &resources, reason)
            .await?;
        Ok(Response::new(subscriptions(&rows)))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::WebhookSubscriptions>, Status> {
        let caller = Caller::of(&request)?.clone();
        let (webhooks, connection_id) = self
            .webhook_target(&caller, "ListWebhooks", &request.get_ref().connection_id)
            .await?;
        let rows = crate::webhooks::store::of_connection(&webhooks.pool, &connection_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(subscriptions(&rows)))
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let request = request.into_inner();
        let mut query = Api::record_query(
            &request.clio_account_id,
            &request.resource,
            request.updated_since,
            request.include_deleted,
        )?;
        self.check_account(&caller, "ListRecords", &query.account_id)
            .await?;
        query.limit = page_size(request.page_size);
        checked("page_token", &request.page_token, MAX_PAGE_TOKEN_CHARS)?;
        query.after_id = Some(request.page_token).filter(|t| !t.is_empty());
        let rows = records::list(&self.pool, &query)
            .await
            .map_err(|e| match e {
                records::RecordError::Database(e) => ApiError::from(e),
                records::RecordError::MissingId { .. } => {
                    ApiError::invalid("page_token", "bad token")
                }
            })?;
        let next_page_token = match rows.last() {
            Some(last) if i64::try_from(rows.len()).unwrap_or(0) == query.limit => {
                last.clio_id.clone()
            }
            _ => String::new(),
        };
        let records = rows
            .into_iter()
            .map(|r| record_to_wire(query.resource, r))
            .collect();
        Ok(Response::new(pb::ListRecordsResponse {
            records,
            next_page_token,
        }))
    }

    async fn export_records(
        &self,
        request: Request<pb::ExportRecordsRequest>,
    ) -> Result<Response<BoxStream<pb::Record>>, Status> {
        let caller = Caller::of(&request)?.clone();
        let request = request.into_inner();
        let mut query = Api::record_query(
            &request.clio_account_id,
            &request.resource,
            request.updated_since,
            request.include_deleted,
        )?;
        self.check_account(&caller, "ExportRecords", &query.account_id)
            .await?;
        query.limit = 1_000;
        let pool = self.pool.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let rows = match records::list(&pool, &query).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        let status = match error {
                            records::RecordError::Database(e) => ApiError::from(e).into(),
                            records::RecordError::MissingId { .. } => {
                                tracing::error!(%error, "export failed");
                                Status::internal("export failed")
                            }
                        };
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let full = i64::try_from(rows.len()).unwrap_or(0) == query.limit;
                query.after_id = rows.last().map(|r| r.clio_id.clone());
                for row in rows {
                    if tx
                        .send(Ok(record_to_wire(query.resource, row)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !full {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn subscriptions(rows: &[SubscriptionRow]) -> pb::WebhookSubscriptions {
    pb::WebhookSubscriptions {
        subscriptions: rows.iter().map(SubscriptionRow::to_wire).collect(),
    }
}
