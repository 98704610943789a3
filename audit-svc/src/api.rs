//! The gRPC handlers: turn requests into validated calls of the modules that do the work,
//! and their results into responses. Every refusal of a request names its field.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use proto::audit::v1 as api;
use proto::audit::v1::audit_service_server::AuditService;
use proto::audit::v1::compliance_service_server::ComplianceService;
use proto::common::v1 as pb;
use scope_catalog::RiskTier;
use service_runtime::caller_auth::{Denial, DenialSink};
use service_runtime::clock::SharedClock;
use service_runtime::{Caller, CancellationToken};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::append::Appender;
use crate::config::Config;
use crate::denials::AppendDenials;
use crate::error::AuditError;
use crate::event::{EventBody, kind_name, subject_kind_name};
use crate::export::{checkpoint_line, event_line, header_line};
use crate::metrics::AuditMetrics;
use crate::query::{
    EventFilter, events_after, events_page, next_page_token, page_size, parse_cursor,
};
use crate::record_spans::RecordSpans;
use crate::signing::TrustedKeys;
use crate::validation::{self, MAX_EVENTS_PER_RECORD};
use crate::verify::{load_checkpoints, verify_tenant};
use crate::watch::{Notifier, run_watcher};
use crate::{reports, review};

/// Events read per round of an export.
const EXPORT_BATCH: u32 = 1_000;
/// An export chunk is sent once it holds this many bytes (well under gRPC's 4 MiB limit).
const CHUNK_BYTES: usize = 1 << 20;

/// The path refused writes are audited under.
const RECORD_METHOD: &str = "/clio_connect.audit.v1.AuditService/Record";
const ATTEST_REVIEW_METHOD: &str = "/clio_connect.audit.v1.ComplianceService/AttestReview";

/// Everything the handlers share.
#[derive(Clone)]
pub struct Api {
    /// `Verify` verdicts are counted here.
    pub metrics: AuditMetrics,
    /// Where refused calls are recorded (as ACCESS_DENIED events of the platform tenant).
    pub denials: Arc<AppendDenials>,
    pub pool: PgPool,
    pub appender: Appender,
    pub keys: Arc<TrustedKeys>,
    pub notifier: Notifier,
    pub clock: SharedClock,
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
}

/// The stream type the generated server traits use.
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn tenant(value: &str) -> Result<String, AuditError> {
    validation::tenant("tenant", value)
}

fn kinds(raw: &[i32]) -> Result<Vec<String>, AuditError> {
    raw.iter()
        .enumerate()
        .map(|(i, k)| validation::event_kind(&format!("kinds[{i}]"), *k).map(kind_name))
        .collect()
}

/// A stream fed by `produce` on its own task.
fn spawn_stream<T, F, Fut>(produce: F) -> Response<Streamed<T>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(produce(sender));
    Response::new(Box::pin(ReceiverStream::new(receiver)))
}

fn chunk(data: Vec<u8>) -> Result<api::ExportChunk, Status> {
    Ok(api::ExportChunk { data })
}

impl Api {
    /// Whether `caller`'s writer grant covers every event of a `Record`: its source and
    /// kind, and its tenant when the credential is limited to tenants. The first event it
    /// does not cover is named in the refusal.
    fn authorize_writer(&self, caller: &Caller, bodies: &[EventBody]) -> Result<(), AuditError> {
        let grant = self.config.writer_grant(&caller.name);
        for (i, body) in bodies.iter().enumerate() {
            let refuse = |name: &str, problem: String| AuditError::Forbidden {
                field: format!("events[{i}].{name}"),
                problem,
            };
            let Some(grant) = grant else {
                // About the credential, not an event: producers keep their events and
                // retry until the grant is configured.
                return Err(AuditError::Forbidden {
                    field: "events".into(),
                    problem: format!("caller {:?} has no writer grant at audit-svc", caller.name),
                });
            };
            if !caller.may_access_tenant(&body.tenant) {
                return Err(refuse(
                    "tenant",
                    format!(
                        "caller {:?} may not write tenant {:?}",
                        caller.name, body.tenant
                    ),
                ));
            }
            if !grant.sources.contains(&body.source) {
                return Err(refuse(
                    "source",
                    format!(
                        "caller {:?} may not write as source {:?}",
                        caller.name, body.source
                    ),
                ));
            }
            if !grant.allows(&body.source, &body.kind) {
                return Err(refuse(
                    "kind",
                    format!(
                        "caller {:?} may not record {} events",
                        caller.name, body.kind
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The export of a tenant's range: header, events, checkpoints.
    async fn export_lines(
        &self,
        tenant: String,
        from: u64,
        to: u64,
        out: mpsc::Sender<Result<api::ExportChunk, Status>>,
    ) -> Result<(), AuditError> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT last_sequence FROM chain_heads WHERE tenant = $1")
                .bind(&tenant)
                .fetch_optional(&self.pool)
                .await?;
        let head = head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0);
        let last = if to == 0 { head } else { to.min(head) };
        let header = header_line(&tenant, from, last, &self.clock.now(), &self.keys);
        if out.send(chunk(header)).await.is_err() {
            return Ok(());
        }
        let filter = EventFilter {
            tenant: tenant.clone(),
            ..EventFilter::default()
        };
        let mut cursor = from.saturating_sub(1);
        while cursor < last {
            let events = events_after(&self.pool, &filter, cursor, EXPORT_BATCH).await?;
            if events.is_empty() {
                break;
            }
            let mut data = Vec::with_capacity(CHUNK_BYTES + 64 * 1_024);
            for event in events.iter().take_while(|e| e.sequence <= last) {
                event_line(event, &mut data);
                cursor = event.sequence;
                if data.len() >= CHUNK_BYTES {
                    let full = std::mem::take(&mut data);
                    if out.send(chunk(full)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if events.last().is_some_and(|e| e.sequence > last) {
                cursor = last;
            }
            if !data.is_empty() && out.send(chunk(data)).await.is_err() {
                return Ok(());
            }
        }
        let checkpoints = load_checkpoints(
            &self.pool,
            &tenant,
            crate::store::db_sequence("from_sequence", from)?,
            crate::store::db_sequence("to_sequence", last)?,
        )
        .await?;
        let mut data = Vec::new();
        for checkpoint in checkpoints.iter().filter(|c| c.sequence <= last) {
            checkpoint_line(checkpoint, &mut data);
        }
        if !data.is_empty() {
            let _ = out.send(chunk(data)).await;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl AuditService for Api {
    type WatchStream = Streamed<pb::AuditEvent>;
    type ExportStream = Streamed<api::ExportChunk>;

    async fn record(
        &self,
        request: Request<api::RecordRequest>,
    ) -> Result<Response<api::RecordResponse>, Status> {
        let events = &request.get_ref().events;
        if events.is_empty() {
            return Err(AuditError::invalid("events", "must not be empty").into());
        }
        if events.len() > MAX_EVENTS_PER_RECORD {
            return Err(AuditError::invalid(
                "events",
                format!("at most {MAX_EVENTS_PER_RECORD} per call"),
            )
            .into());
        }
        let mut bodies = events
            .iter()
            .enumerate()
            .map(|(i, e)| validation::event(&format!("events[{i}]"), e))
            .collect::<Result<Vec<_>, _>>()?;
        let caller = Caller::of(&request)?;
        if let Err(refusal) = self.authorize_writer(caller, &bodies) {
            // Refused like a call the caller-auth layer refuses, and audited the same way.
            self.denials.denied(Denial {
                method: RECORD_METHOD.to_owned(),
                caller: Some(caller.name.clone()),
                code: tonic::Code::PermissionDenied,
                reason: refusal.to_string(),
            });
            return Err(refusal.into());
        }
        for body in &mut bodies {
            body.writer.clone_from(&caller.name);
        }
        let spans = RecordSpans::open(&request.get_ref().trace_parents, &bodies);
        let appended = self
            .appender
            .append(&bodies)
            .await
            .inspect_err(|_| spans.failed())?;
        Ok(Response::new(api::RecordResponse {
            events: appended.events.iter().map(|e| e.to_wire()).collect(),
            duplicates: appended.duplicates,
        }))
    }

    async fn query(
        &self,
        request: Request<api::QueryRequest>,
    ) -> Result<Response<api::QueryResponse>, Status> {
        let request = request.into_inner();
        let subject = match request.subject {
            None => None,
            Some(subject) => {
                let kind = match pb::subject::Kind::try_from(subject.kind) {
                    Ok(pb::subject::Kind::Unspecified) | Err(_) => {
                        return Err(AuditError::invalid("subject.kind", "must be set").into());
                    }
                    Ok(kind) => subject_kind_name(kind),
                };
                if subject.id.trim().is_empty() {
                    return Err(AuditError::invalid("subject.id", "must not be empty").into());
                }
                Some((kind, subject.id))
            }
        };
        let filter = EventFilter {
            tenant: tenant(&request.tenant)?,
            kinds: kinds(&request.kinds)?,
            subject,
            actor_id: Some(request.actor_id).filter(|a| !a.is_empty()),
            occurred: validation::time_range("occurred", request.occurred.as_ref())?,
        };
        let page = request.page.unwrap_or_default();
        let cursor = parse_cursor(&page.page_token, request.newest_first)?;
        let size = page_size(page.page_size);
        // One more than the page tells whether there is a next page.
        let mut events = events_page(&self.pool, &filter, cursor, size + 1).await?;
        let more = events.len() > size as usize;
        events.truncate(size as usize);
        let next_page_token = match events.last() {
            Some(last) if more => next_page_token(cursor, last.sequence),
            _ => String::new(),
        };
        Ok(Response::new(api::QueryResponse {
            events: events.iter().map(|e| e.to_wire()).collect(),
            page: Some(pb::PageResponse { next_page_token }),
        }))
    }

    async fn watch(
        &self,
        request: Request<api::WatchRequest>,
    ) -> Result<Response<Streamed<pb::AuditEvent>>, Status> {
        let request = request.into_inner();
        let filter = EventFilter {
            tenant: tenant(&request.tenant)?,
            kinds: kinds(&request.kinds)?,
            ..EventFilter::default()
        };
        crate::store::db_sequence("after_sequence", request.after_sequence)?;
        let poll = Duration::from_millis(self.config.watch.poll_interval_ms);
        let (pool, notifier, shutdown) = (
            self.pool.clone(),
            self.notifier.clone(),
            self.shutdown.clone(),
        );
        Ok(spawn_stream(move |out| {
            run_watcher(
                pool,
                notifier,
                filter,
                request.after_sequence,
                poll,
                out,
                shutdown,
            )
        }))
    }

    async fn verify(
        &self,
        request: Request<api::VerifyRequest>,
    ) -> Result<Response<api::VerifyResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let verdict = verify_tenant(
            &self.pool,
            &self.keys,
            &tenant,
            request.from_sequence,
            request.to_sequence,
        )
        .await?;
        self.metrics.verified(verdict.first_broken.is_none());
        if let Some(broken) = &verdict.first_broken {
            tracing::error!(
                tenant = %tenant,
                sequence = broken.sequence,
                event_id = %broken.event_id,
                reason = %broken.reason,
                "audit chain verification failed"
            );
        }
        let last_checkpoint = crate::checkpoint::newest(&self.pool, &tenant).await?;
        Ok(Response::new(api::VerifyResponse {
            last_checkpoint_sequence: last_checkpoint.map_or(0, |(sequence, _)| sequence),
            last_checkpoint_signed_at: last_checkpoint.map(|(_, at)| proto::time::timestamp(at)),
            ok: verdict.first_broken.is_none(),
            events_checked: verdict.events_checked,
            checkpoints_checked: verdict.checkpoints_checked,
            first_broken: verdict.first_broken.map(|b| api::BrokenLink {
                sequence: b.sequence,
                event_id: b.event_id,
                reason: b.reason,
            }),
            head_hash: verdict.head_hash,
        }))
    }

    async fn export(
        &self,
        request: Request<api::ExportRequest>,
    ) -> Result<Response<Streamed<api::ExportChunk>>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let from = request.from_sequence.max(1);
        crate::store::db_sequence("from_sequence", from)?;
        crate::store::db_sequence("to_sequence", request.to_sequence)?;
        if request.to_sequence != 0 && request.to_sequence < from {
            return Err(AuditError::invalid("to_sequence", "before from_sequence").into());
        }
        let api = self.clone();
        Ok(spawn_stream(move |out| async move {
            if let Err(error) = api
                .export_lines(tenant, from, request.to_sequence, out.clone())
                .await
            {
                let _ = out.send(Err(error.into())).await;
            }
        }))
    }
}

#[tonic::async_trait]
impl ComplianceService for Api {
    type ExportQuarterlyReviewStream = Streamed<api::ExportChunk>;

    async fn connections_by_risk_tier(
        &self,
        request: Request<api::ConnectionsByRiskTierRequest>,
    ) -> Result<Response<api::ConnectionsByRiskTierResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let min_tier = match pb::RiskTier::try_from(request.min_tier) {
            Err(_) => return Err(AuditError::invalid("min_tier", "unknown risk tier").into()),
            Ok(_) => RiskTier::from_wire(request.min_tier),
        };
        let tiers = reports::by_risk_tier(&self.pool, &tenant, min_tier).await?;
        Ok(Response::new(api::ConnectionsByRiskTierResponse { tiers }))
    }

    async fn full_access_apps(
        &self,
        request: Request<api::FullAccessAppsRequest>,
    ) -> Result<Response<api::FullAccessAppsResponse>, Status> {
        let tenant = tenant(&request.get_ref().tenant)?;
        let apps = reports::full_access_apps(&self.pool, &tenant).await?;
        Ok(Response::new(api::FullAccessAppsResponse { apps }))
    }

    async fn write_capable_connections(
        &self,
        request: Request<api::WriteCapableConnectionsRequest>,
    ) -> Result<Response<api::WriteCapableConnectionsResponse>, Status> {
        let tenant = tenant(&request.get_ref().tenant)?;
        let connections = reports::write_capable(&self.pool, &tenant).await?;
        Ok(Response::new(api::WriteCapableConnectionsResponse {
            connections,
        }))
    }

    async fn zombie_connections(
        &self,
        request: Request<api::ZombieConnectionsRequest>,
    ) -> Result<Response<api::ZombieConnectionsResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let idle_days = match request.idle_days {
            0 => self.config.reports.zombie_idle_days,
            n => n,
        };
        let as_of = match &request.as_of {
            Some(at) => validation::instant("as_of", at)?,
            None => self.clock.now(),
        };
        let connections = reports::zombies(&self.pool, &tenant, idle_days, as_of).await?;
        Ok(Response::new(api::ZombieConnectionsResponse {
            connections,
        }))
    }

    async fn offboarding_report(
        &self,
        request: Request<api::OffboardingReportRequest>,
    ) -> Result<Response<api::OffboardingReportResponse>, Status> {
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let range = validation::time_range("offboarded", request.offboarded.as_ref())?;
        let limit_minutes =
            i64::try_from(self.config.reports.offboarding_limit_minutes).unwrap_or(i64::MAX);
        let limit = chrono::Duration::try_minutes(limit_minutes).unwrap_or(chrono::Duration::MAX);
        let entries =
            reports::offboarding(&self.pool, &tenant, range, limit, self.clock.now()).await?;
        Ok(Response::new(api::OffboardingReportResponse { entries }))
    }

    async fn scope_drift_report(
        &self,
        request: Request<api::ScopeDriftReportRequest>,
    ) -> Result<Response<api::ScopeDriftReportResponse>, Status> {
        let tenant = tenant(&request.get_ref().tenant)?;
        let connections = reports::scope_drift(&self.pool, &tenant).await?;
        Ok(Response::new(api::ScopeDriftReportResponse { connections }))
    }

    async fn shared_login_suspicions(
        &self,
        request: Request<api::SharedLoginSuspicionsRequest>,
    ) -> Result<Response<api::SharedLoginSuspicionsResponse>, Status> {
        let tenant = tenant(&request.get_ref().tenant)?;
        let suspicions = reports::shared_logins(&self.pool, &tenant).await?;
        Ok(Response::new(api::SharedLoginSuspicionsResponse {
            suspicions,
        }))
    }

    async fn generate_quarterly_review(
        &self,
        request: Request<api::GenerateQuarterlyReviewRequest>,
    ) -> Result<Response<api::QuarterlyReview>, Status> {
        let caller = Caller::of(&request)?.name.clone();
        let request = request.into_inner();
        let tenant = tenant(&request.tenant)?;
        let quarter = review::quarter_of(request.year, request.quarter)?;
        let review = review::generate(&self.appender, &tenant, quarter, &caller).await?;
        Ok(Response::new(review))
    }

    async fn get_quarterly_review(
        &self,
        request: Request<api::GetQuarterlyReviewRequest>,
    ) -> Result<Response<api::QuarterlyReview>, Status> {
        let request = request.into_inner();
        let id = review::review_id("review_id", &request.review_id)?;
        Ok(Response::new(
            review::get(&self.pool, id, request.unreviewed_only).await?,
        ))
    }

    async fn attest_review(
        &self,
        request: Request<api::AttestReviewRequest>,
    ) -> Result<Response<api::ReviewItem>, Status> {
        // The reviewer is the authenticated credential.
        let caller = Caller::of(&request)?.name.clone();
        match review::attest(&self.appender, request.get_ref(), &caller).await {
            Ok(item) => Ok(Response::new(item)),
            Err(review::Refused::Error(error)) => Err(error.into()),
            Err(review::Refused::SelfAttestation(reason)) => {
                // Refused like a call the caller-auth layer refuses, and audited the same way.
                self.denials.denied(Denial {
                    method: ATTEST_REVIEW_METHOD.to_owned(),
                    caller: Some(caller),
                    code: tonic::Code::PermissionDenied,
                    reason: reason.clone(),
                });
                Err(Status::permission_denied(reason))
            }
        }
    }

    async fn export_quarterly_review(
        &self,
        request: Request<api::ExportQuarterlyReviewRequest>,
    ) -> Result<Response<Streamed<api::ExportChunk>>, Status> {
        let request = request.into_inner();
        let id = review::review_id("review_id", &request.review_id)?;
        let format = api::ExportFormat::try_from(request.format)
            .map_err(|_| AuditError::invalid("format", "must be CSV or JSON"))?;
        let data = review::export(&self.pool, id, format).await?;
        Ok(spawn_stream(move |out| async move {
            let _ = out.send(chunk(data)).await;
        }))
    }
}
