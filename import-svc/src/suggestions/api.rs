//! The `SuggestionService` gRPC handlers. Requests are checked before anything is read
//! (`INVALID_ARGUMENT` naming the field); a refusal by [`super::access`] is audited.

use chrono::{DateTime, Utc};
use proto::suggestions::v1 as pb;
use proto::suggestions::v1::suggestion_service_server::SuggestionService;
use proto::time::timestamp;
use service_runtime::caller_auth::Caller;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::access;
use super::detect::{DetectError, Detection, Detector, Target};
use super::events;
use super::store::{self, Decision, Filter, Status as Stored, SuggestionRow};
use super::write::Writer;
use crate::access::Refusals;
use crate::audit::Auditor;
use crate::error::ApiError;
use crate::job::spec::{MAX_FREE_TEXT_CHARS, MAX_ID_CHARS, check_free_text, check_text};
use crate::leases::LeaseError;

/// The service's full name, as refusals and the access policy name it.
pub const SUGGESTION_SERVICE: &str = <pb::suggestion_service_server::SuggestionServiceServer<
    Suggestions,
> as tonic::server::NamedService>::NAME;

const DEFAULT_PAGE: u32 = 100;
/// The longest description an approver may write (Clio's note field takes more).
const MAX_DESCRIPTION_CHARS: usize = 500;
/// The longest time entry an approver may approve: a day.
const MAX_QUANTITY_SECS: i64 = 24 * 3_600;
const MAX_PAGE: u32 = 500;

#[derive(Clone)]
pub struct Suggestions {
    pub pool: PgPool,
    pub detector: Detector,
    pub writer: Writer,
    pub audit: Auditor,
    pub refusals: Refusals,
    pub max_range_days: u32,
}

impl From<DetectError> for ApiError {
    fn from(error: DetectError) -> Self {
        match error {
            DetectError::Precondition(why) => ApiError::Precondition(why),
            DetectError::Unavailable(why) => ApiError::DependencyUnavailable(why),
            DetectError::Database(inner) => inner.into(),
        }
    }
}

fn suggestion_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::invalid("suggestion_id", "must be a UUID"))
}

fn connection_id(text: &str) -> Result<&str, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid("connection_id", "is required"));
    }
    check_text(text, MAX_ID_CHARS)
        .map_err(|problem| ApiError::invalid("connection_id", problem))?;
    Ok(text)
}

fn time(field: &str, value: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    proto::time::date_time(value).ok_or_else(|| ApiError::invalid(field, "is not a valid time"))
}

impl Suggestions {
    /// The stored suggestion `caller` may read, or the refusal (audited) to send.
    async fn readable(
        &self,
        caller: &Caller,
        method: &str,
        id: Uuid,
    ) -> Result<SuggestionRow, ApiError> {
        let row = store::get(&self.pool, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("suggestion {id} not found")))?;
        access::may_read(caller, &row.owner, &row.tenant)
            .map_err(|why| self.refuse(caller, method, why))?;
        Ok(row)
    }

    /// The connection as auth-svc describes it, for a caller allowed to act on it.
    async fn actionable(
        &self,
        caller: &Caller,
        method: &str,
        connection_id: &str,
        deciding: bool,
    ) -> Result<crate::leases::ConnectionInfo, ApiError> {
        let connection = self
            .detector
            .leases
            .connection(connection_id)
            .await
            .map_err(|error| match error {
                LeaseError::Refused(why) => ApiError::NotFound(why),
                LeaseError::Unusable(why) => ApiError::Precondition(why),
                LeaseError::Unavailable(why) => ApiError::DependencyUnavailable(why),
            })?;
        access::may_act(caller, &connection.principal, &connection.tenant, deciding)
            .map_err(|why| self.refuse(caller, method, why))?;
        Ok(connection)
    }
}

impl Suggestions {
    /// Whether `caller` sees the suggestion's matter in Clio, through a connection of
    /// their own to the same Clio account: the suggestion's own when they made it, else
    /// one they made with `matters:read`. Refused (audited) when they do not, or cannot
    /// show it.
    async fn check_sees_matter(
        &self,
        caller: &Caller,
        row: &SuggestionRow,
    ) -> Result<(), ApiError> {
        let matters =
            scope_catalog::Scope::new(scope_catalog::Family::Matters, scope_catalog::Access::Read);
        let leases = &self.detector.leases;
        let unavailable = |error: LeaseError| match error {
            LeaseError::Unavailable(why) => ApiError::DependencyUnavailable(why),
            LeaseError::Refused(why) | LeaseError::Unusable(why) => ApiError::Precondition(why),
        };
        let connection = if caller.name == row.owner {
            row.connection_id.clone()
        } else {
            let own = leases
                .active_connections_of(&caller.name, &row.tenant, &row.clio_account_id, &matters)
                .await
                .map_err(unavailable)?;
            match own.into_iter().next() {
                Some(connection) => connection,
                None => {
                    return Err(self.refuse(
                        caller,
                        "ApproveSuggestion",
                        format!(
                            "{} has no active Clio connection to account {} with matters:read, \
                             so cannot show they see matter {}",
                            caller.name, row.clio_account_id, row.matter_id
                        ),
                    ));
                }
            }
        };
        let purpose = format!(
            "billing suggestion {}: approver sees the matter",
            row.suggestion_id
        );
        let lease = leases
            .lease(&connection, &[matters], &purpose, false)
            .await
            .map_err(unavailable)?;
        let sees = self
            .detector
            .clio
            .sees_matter(&lease, &connection, row.matter_id)
            .await
            .map_err(|error| match error.is_retryable() {
                true => ApiError::DependencyUnavailable(error.to_string()),
                false => ApiError::Precondition(format!("Clio refused the matter check: {error}")),
            })?;
        if !sees {
            return Err(self.refuse(
                caller,
                "ApproveSuggestion",
                format!(
                    "{} does not see matter {} in Clio",
                    caller.name, row.matter_id
                ),
            ));
        }
        Ok(())
    }

    fn refuse(&self, caller: &Caller, method: &str, why: String) -> ApiError {
        ApiError::Refused(
            self.refusals
                .refuse_in(SUGGESTION_SERVICE, caller, method, why),
        )
    }
}

/// The approver's edits, checked: the quantity and description to write.
fn edited(
    request: &pb::ApproveSuggestionRequest,
    row: &SuggestionRow,
) -> Result<(i64, String), ApiError> {
    let quantity = match request.quantity_secs {
        0 => row.quantity_secs,
        q if !(1..=MAX_QUANTITY_SECS).contains(&q) => {
            return Err(ApiError::invalid(
                "quantity_secs",
                format!("must be between 1 and {MAX_QUANTITY_SECS} seconds"),
            ));
        }
        q => q,
    };
    let description = match request.description.trim() {
        "" => row.description.clone(),
        text => {
            check_text(text, MAX_DESCRIPTION_CHARS)
                .map_err(|problem| ApiError::invalid("description", problem))?;
            text.to_owned()
        }
    };
    Ok((quantity, description))
}

#[tonic::async_trait]
impl SuggestionService for Suggestions {
    async fn approve_suggestion(
        &self,
        request: Request<pb::ApproveSuggestionRequest>,
    ) -> Result<Response<pb::Suggestion>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = suggestion_id(&body.suggestion_id)?;
        let row = self.readable(caller, "ApproveSuggestion", id).await?;
        access::may_act(caller, &row.owner, &row.tenant, true)
            .map_err(|why| self.refuse(caller, "ApproveSuggestion", why))?;
        let (quantity, description) = edited(body, &row)?;
        if row.status != Stored::Pending.as_str() {
            return Err(not_pending(id, &row.status, "approved").into());
        }
        self.check_sees_matter(caller, &row).await?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let before = store::lock(&mut *tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("suggestion {id} not found")))?;
        if before.status != Stored::Pending.as_str() {
            return Err(not_pending(id, &before.status, "approved").into());
        }
        let now = self.detector.clock.now();
        let decision = Decision::Approve {
            quantity_secs: quantity,
            description: &description,
        };
        let approved = store::decide(&mut *tx, id, &caller.name, &decision, now)
            .await
            .map_err(ApiError::from)?;
        self.audit
            .enqueue_event(&mut tx, events::approved(&approved, &before, &caller.name))
            .await
            .map_err(ApiError::from)?;
        // Held for this call's write from the moment it is approved: the background pass
        // never sees it unheld. If this replica dies before writing, the hold lapses and
        // the pass takes it.
        let claimed = store::claim(&mut *tx, id, self.writer.hold)
            .await
            .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        self.audit.committed();
        tracing::info!(suggestion_id = %id, by = %caller.name, "suggestion approved");
        // Written now if Clio answers; otherwise the background pass finishes it.
        let written = match &claimed {
            Some(row) => self.writer.write_claimed(row).await,
            // Already held by another writer (never so for a suggestion pending until
            // now): that writer finishes it.
            None => Ok(None),
        };
        let after = match written {
            Ok(Some(row)) => row,
            Ok(None) => approved,
            Err(error) => {
                tracing::warn!(suggestion_id = %id, %error, "approved; the write is left to the background pass");
                approved
            }
        };
        Ok(Response::new(to_wire(&after)))
    }

    async fn detect_unbilled_time(
        &self,
        request: Request<pb::DetectUnbilledTimeRequest>,
    ) -> Result<Response<pb::DetectUnbilledTimeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let connection_id = connection_id(&body.connection_id)?;
        let from = time("from", body.from.as_ref())?;
        let to = time("to", body.to.as_ref())?;
        if to <= from {
            return Err(ApiError::invalid("to", "must be after from").into());
        }
        if to - from > chrono::Duration::days(i64::from(self.max_range_days)) {
            return Err(ApiError::invalid(
                "to",
                format!("the range is longer than {} days", self.max_range_days),
            )
            .into());
        }
        let connection = self
            .actionable(caller, "DetectUnbilledTime", connection_id, false)
            .await?;
        let detection = self
            .detector
            .detect(&Target {
                connection_id,
                connection: &connection,
                from,
                to,
                requested_by: &caller.name,
            })
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            %connection_id,
            read = detection.entries_read,
            created = detection.created.len(),
            "unbilled time detected"
        );
        Ok(Response::new(detection_to_wire(detection)))
    }

    async fn list_suggestions(
        &self,
        request: Request<pb::ListSuggestionsRequest>,
    ) -> Result<Response<pb::ListSuggestionsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let status = match pb::SuggestionStatus::try_from(body.status) {
            Ok(pb::SuggestionStatus::Unspecified) => None,
            Ok(status) => Some(status_from_wire(status)),
            Err(_) => return Err(ApiError::invalid("status", "unknown status").into()),
        };
        let after = match body.page_token.as_str() {
            "" => None,
            token => Some(Uuid::parse_str(token).map_err(|_| {
                ApiError::invalid("page_token", "not a token from a previous page")
            })?),
        };
        if !body.connection_id.is_empty() {
            connection_id(&body.connection_id)?;
        }
        let limit = match body.page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let filter = Filter {
            connection_id: Some(body.connection_id.clone()).filter(|c| !c.is_empty()),
            user_id: Some(body.user_id).filter(|id| *id != 0),
            matter_id: Some(body.matter_id).filter(|id| *id != 0),
            status,
            owner: (!access::sees_every_owner(caller)).then(|| caller.name.clone()),
            tenants: caller.tenants.clone(),
            after,
            limit: i64::from(limit),
        };
        let rows = store::list(&self.pool, &filter)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => last.suggestion_id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSuggestionsResponse {
            suggestions: rows.iter().map(to_wire).collect(),
            next_page_token,
        }))
    }

    async fn get_suggestion(
        &self,
        request: Request<pb::GetSuggestionRequest>,
    ) -> Result<Response<pb::Suggestion>, Status> {
        let caller = Caller::of(&request)?;
        let id = suggestion_id(&request.get_ref().suggestion_id)?;
        let row = self.readable(caller, "GetSuggestion", id).await?;
        Ok(Response::new(to_wire(&row)))
    }

    async fn reject_suggestion(
        &self,
        request: Request<pb::RejectSuggestionRequest>,
    ) -> Result<Response<pb::Suggestion>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = suggestion_id(&body.suggestion_id)?;
        let reason = body.reason.trim();
        if reason.is_empty() {
            return Err(
                ApiError::invalid("reason", "is required: say why the time is not billed").into(),
            );
        }
        check_free_text(reason, MAX_FREE_TEXT_CHARS)
            .map_err(|problem| ApiError::invalid("reason", problem))?;
        let row = self.readable(caller, "RejectSuggestion", id).await?;
        access::may_act(caller, &row.owner, &row.tenant, true)
            .map_err(|why| self.refuse(caller, "RejectSuggestion", why))?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let locked = store::lock(&mut *tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("suggestion {id} not found")))?;
        if locked.status != Stored::Pending.as_str() {
            return Err(not_pending(id, &locked.status, "rejected").into());
        }
        let now = self.detector.clock.now();
        let rejected = store::decide(
            &mut *tx,
            id,
            &caller.name,
            &Decision::Reject { reason },
            now,
        )
        .await
        .map_err(ApiError::from)?;
        self.audit
            .enqueue_event(&mut tx, events::rejected(&rejected, &caller.name, reason))
            .await
            .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        self.audit.committed();
        tracing::info!(suggestion_id = %id, by = %caller.name, "suggestion rejected");
        Ok(Response::new(to_wire(&rejected)))
    }
}

fn not_pending(id: Uuid, status: &str, decision: &str) -> ApiError {
    ApiError::Precondition(format!(
        "suggestion {id} is {status}, not pending: only a pending suggestion can be {decision}"
    ))
}

fn detection_to_wire(detection: Detection) -> pb::DetectUnbilledTimeResponse {
    let skipped = &detection.skipped;
    pb::DetectUnbilledTimeResponse {
        entries_read: detection.entries_read,
        created: detection.created.iter().map(to_wire).collect(),
        skipped: Some(pb::SkippedEntries {
            without_matter: skipped.count("without_matter"),
            all_day: skipped.count("all_day"),
            cancelled: skipped.count("cancelled"),
            too_short: skipped.count("too_short"),
            already_billed: skipped.already_billed,
            already_suggested: skipped.already_suggested,
            without_user: skipped.count("without_user"),
            unreadable: skipped.count("unreadable"),
        }),
    }
}

fn status_from_wire(status: pb::SuggestionStatus) -> Stored {
    match status {
        pb::SuggestionStatus::Unspecified | pb::SuggestionStatus::Pending => Stored::Pending,
        pb::SuggestionStatus::Approved => Stored::Approved,
        pb::SuggestionStatus::Written => Stored::Written,
        pb::SuggestionStatus::Rejected => Stored::Rejected,
        pb::SuggestionStatus::Failed => Stored::Failed,
        pb::SuggestionStatus::Cancelled => Stored::Cancelled,
    }
}

fn status_to_wire(status: &str) -> pb::SuggestionStatus {
    match Stored::parse(status) {
        Some(Stored::Pending) => pb::SuggestionStatus::Pending,
        Some(Stored::Approved) => pb::SuggestionStatus::Approved,
        Some(Stored::Written) => pb::SuggestionStatus::Written,
        Some(Stored::Rejected) => pb::SuggestionStatus::Rejected,
        Some(Stored::Failed) => pb::SuggestionStatus::Failed,
        Some(Stored::Cancelled) => pb::SuggestionStatus::Cancelled,
        None => pb::SuggestionStatus::Unspecified,
    }
}

fn to_wire(row: &SuggestionRow) -> pb::Suggestion {
    pb::Suggestion {
        suggestion_id: row.suggestion_id.to_string(),
        connection_id: row.connection_id.clone(),
        clio_account_id: row.clio_account_id.clone(),
        tenant: row.tenant.clone(),
        status: status_to_wire(&row.status) as i32,
        calendar_entry_id: row.calendar_entry_id.clone(),
        matter_id: row.matter_id,
        user_id: row.user_id,
        date: row.entry_date.to_string(),
        quantity_secs: row.quantity_secs,
        description: row.description.clone(),
        created_at: Some(timestamp(row.created_at)),
        decided_by: row.decided_by.clone().unwrap_or_default(),
        decided_at: row.decided_at.map(timestamp),
        rejection_reason: row.rejection_reason.clone().unwrap_or_default(),
        clio_activity_id: row.clio_activity_id.unwrap_or_default(),
        error: row.error.clone().unwrap_or_default(),
    }
}
