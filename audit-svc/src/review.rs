//! Quarterly access reviews: generated and attested through events in the log (so the
//! review projection is rebuilt with the rest), read back from the projection, exported as
//! CSV or JSON.
//!
//! One review per tenant and quarter: generating it again returns the existing one.

use chrono::{DateTime, SubsecRound, Utc};
use proto::audit::v1 as api;
use proto::audit_limits::{MAX_ID_BYTES, MAX_TEXT_BYTES};
use proto::common::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::append::Appender;
use crate::canonical::canonical_value;
use crate::error::AuditError;
use proto::time::timestamp;

use crate::event::{EventBody, Refs, kind_name};
use crate::reports::{ConnectionRow, scope_set};

/// The `source` of events this service records itself.
pub const SOURCE: &str = "audit-svc";

#[derive(Debug, Clone, sqlx::FromRow)]
struct ReviewRow {
    review_id: Uuid,
    tenant: String,
    year: i32,
    quarter: i32,
    generated_at: DateTime<Utc>,
    generated_by: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ItemRow {
    connection_id: String,
    app_id: String,
    principal: String,
    clio_user_id: String,
    clio_account_id: String,
    region: String,
    scopes: Vec<String>,
    granted_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    grant_age_days: i32,
    decision: Option<String>,
    reviewer: Option<String>,
    note: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    /// When the connection's revocation was recorded (now, not at generation).
    connection_revoked_at: Option<DateTime<Utc>>,
}

impl ItemRow {
    /// A "revoke" decision is an action, open until the connection's revocation arrives.
    fn action(&self) -> (api::ReviewActionStatus, Option<DateTime<Utc>>) {
        match (self.decision.as_deref(), self.connection_revoked_at) {
            (Some("revoke"), Some(at)) => (api::ReviewActionStatus::Done, Some(at)),
            (Some("revoke"), None) => (api::ReviewActionStatus::Open, None),
            _ => (api::ReviewActionStatus::None, None),
        }
    }

    fn to_wire(&self, review: &ReviewRow) -> api::ReviewItem {
        let connection = ConnectionRow {
            tenant: review.tenant.clone(),
            connection_id: self.connection_id.clone(),
            app_id: self.app_id.clone(),
            principal: self.principal.clone(),
            clio_user_id: self.clio_user_id.clone(),
            clio_account_id: self.clio_account_id.clone(),
            region: self.region.clone(),
            scopes: self.scopes.clone(),
            granted_at: self.granted_at,
            last_used_at: self.last_used_at,
            revoked_at: None,
        };
        api::ReviewItem {
            review_id: review.review_id.to_string(),
            connection: Some(connection.summary()),
            grant_age_days: u32::try_from(self.grant_age_days).unwrap_or(0),
            decision: decision_from_name(self.decision.as_deref()) as i32,
            reviewer: self.reviewer.clone().unwrap_or_default(),
            note: self.note.clone().unwrap_or_default(),
            decided_at: self.decided_at.map(timestamp),
            action: self.action().0 as i32,
            action_done_at: self.action().1.map(timestamp),
        }
    }
}

fn decision_name(decision: api::ReviewDecision) -> Option<&'static str> {
    match decision {
        api::ReviewDecision::Keep => Some("keep"),
        api::ReviewDecision::Revoke => Some("revoke"),
        api::ReviewDecision::Unspecified => None,
    }
}

fn decision_from_name(name: Option<&str>) -> api::ReviewDecision {
    match name {
        Some("keep") => api::ReviewDecision::Keep,
        Some("revoke") => api::ReviewDecision::Revoke,
        _ => api::ReviewDecision::Unspecified,
    }
}

/// A validated `(year, quarter)`.
pub fn quarter_of(year: u32, quarter: u32) -> Result<(i32, i32), AuditError> {
    if !(2000..=9999).contains(&year) {
        return Err(AuditError::invalid("year", "must be between 2000 and 9999"));
    }
    if !(1..=4).contains(&quarter) {
        return Err(AuditError::invalid("quarter", "must be 1, 2, 3 or 4"));
    }
    Ok((
        i32::try_from(year).unwrap_or_default(),
        i32::try_from(quarter).unwrap_or_default(),
    ))
}

pub fn review_id(field: &str, text: &str) -> Result<Uuid, AuditError> {
    if text.trim().is_empty() {
        return Err(AuditError::invalid(field, "must not be empty"));
    }
    Uuid::parse_str(text.trim()).map_err(|_| AuditError::invalid(field, "not a UUID"))
}

async fn find_review(pool: &PgPool, id: Uuid) -> Result<ReviewRow, AuditError> {
    sqlx::query_as(
        "SELECT review_id, tenant, year, quarter, generated_at, generated_by FROM proj_reviews \
         WHERE review_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| AuditError::NotFound(format!("review {id}")))
}

async fn items(
    pool: &PgPool,
    id: Uuid,
    connection: Option<&str>,
) -> Result<Vec<ItemRow>, AuditError> {
    Ok(sqlx::query_as(
        "SELECT i.connection_id, i.app_id, i.principal, i.clio_user_id, i.clio_account_id, \
         i.region, i.scopes, i.granted_at, i.last_used_at, i.grant_age_days, i.decision, \
         i.reviewer, i.note, i.decided_at, c.revoked_at AS connection_revoked_at \
         FROM proj_review_items i JOIN proj_reviews r ON r.review_id = i.review_id \
         LEFT JOIN proj_connections c ON c.tenant = r.tenant AND c.connection_id = i.connection_id \
         WHERE i.review_id = $1 AND ($2::text IS NULL OR i.connection_id = $2) \
         ORDER BY i.connection_id",
    )
    .bind(id)
    .bind(connection)
    .fetch_all(pool)
    .await?)
}

/// The review with its items (or only those still undecided).
pub async fn get(
    pool: &PgPool,
    id: Uuid,
    unreviewed_only: bool,
) -> Result<api::QuarterlyReview, AuditError> {
    let review = find_review(pool, id).await?;
    let all = items(pool, id, None).await?;
    let unreviewed = all.iter().filter(|i| i.decision.is_none()).count();
    let open_actions = all
        .iter()
        .filter(|i| i.action().0 == api::ReviewActionStatus::Open)
        .count();
    Ok(api::QuarterlyReview {
        review_id: review.review_id.to_string(),
        tenant: review.tenant.clone(),
        year: u32::try_from(review.year).unwrap_or(0),
        quarter: u32::try_from(review.quarter).unwrap_or(0),
        generated_at: Some(timestamp(review.generated_at)),
        items: all
            .iter()
            .filter(|i| !unreviewed_only || i.decision.is_none())
            .map(|i| i.to_wire(&review))
            .collect(),
        unreviewed: u32::try_from(unreviewed).unwrap_or(u32::MAX),
        open_actions: u32::try_from(open_actions).unwrap_or(u32::MAX),
        generated_by: review.generated_by.clone(),
    })
}

/// An event this service records itself.
fn own_event(
    tenant: &str,
    kind: pb::EventKind,
    actor: (pb::actor::Kind, &str),
    review: Uuid,
    connection_id: &str,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> EventBody {
    EventBody {
        event_id: Uuid::new_v4(),
        tenant: tenant.to_owned(),
        kind: kind_name(kind),
        actor_kind: crate::event::actor_kind_name(actor.0),
        actor_id: actor.1.to_owned(),
        subject_kind: crate::event::subject_kind_name(pb::subject::Kind::Review),
        subject_id: review.to_string(),
        refs: Refs {
            connection_id: connection_id.to_owned(),
            ..Refs::default()
        },
        scopes: Vec::new(),
        risk_tier: String::new(),
        reason: String::new(),
        source: SOURCE.to_owned(),
        occurred_at: now.trunc_subsecs(6),
        payload: canonical_value(payload),
        // The caller of the ComplianceService call; set by the caller of this function.
        writer: String::new(),
    }
}

/// Generates (or returns the existing) review of `tenant` for the quarter.
pub async fn generate(
    appender: &Appender,
    tenant: &str,
    (year, quarter): (i32, i32),
    caller: &str,
) -> Result<api::QuarterlyReview, AuditError> {
    let existing = || async {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT review_id FROM proj_reviews WHERE tenant = $1 AND year = $2 AND quarter = $3",
        )
        .bind(tenant)
        .bind(year)
        .bind(quarter)
        .fetch_optional(&appender.pool)
        .await
    };
    if let Some(id) = existing().await? {
        return get(&appender.pool, id, false).await;
    }
    let id = Uuid::new_v4();
    let event = own_event(
        tenant,
        pb::EventKind::ReviewGenerated,
        (pb::actor::Kind::Service, caller),
        id,
        "",
        &serde_json::json!({ "review_id": id.to_string(), "year": year, "quarter": quarter }),
        appender.clock.now(),
    );
    let event = EventBody {
        writer: caller.to_owned(),
        ..event
    };
    appender.append(std::slice::from_ref(&event)).await?;
    // A concurrent generation of the same quarter may have won; its review is the one.
    let id = existing().await?.unwrap_or(id);
    get(&appender.pool, id, false).await
}

/// Why an attestation is refused before anything is recorded.
#[derive(Debug)]
pub enum Refused {
    /// The credential that generated the review may not attest it (separation of duties).
    SelfAttestation(String),
    Error(AuditError),
}

impl From<AuditError> for Refused {
    fn from(error: AuditError) -> Self {
        Refused::Error(error)
    }
}

impl From<sqlx::Error> for Refused {
    fn from(error: sqlx::Error) -> Self {
        Refused::Error(error.into())
    }
}

/// Records a reviewer's decision on one item and returns the item.
///
/// The reviewer is the authenticated `caller`, never a name in the request (a name there
/// is only a claim, and is ignored). The credential that generated the review may not
/// attest it: generating and approving one's own access review is no review. A "revoke"
/// decision is an action the review shows as open until the connection's revocation
/// arrives in the log.
pub async fn attest(
    appender: &Appender,
    request: &api::AttestReviewRequest,
    caller: &str,
) -> Result<api::ReviewItem, Refused> {
    let id = review_id("review_id", &request.review_id)?;
    if request.connection_id.trim().is_empty() {
        return Err(AuditError::invalid("connection_id", "must not be empty").into());
    }
    let decision = api::ReviewDecision::try_from(request.decision)
        .ok()
        .and_then(decision_name)
        .ok_or_else(|| AuditError::invalid("decision", "must be KEEP or REVOKE"))?;
    if caller.len() > MAX_ID_BYTES {
        return Err(AuditError::Internal("caller name longer than an actor id".into()).into());
    }
    if request.note.len() > MAX_TEXT_BYTES || request.note.contains('\0') {
        return Err(AuditError::invalid("note", "longer than 4 KiB or contains NUL").into());
    }
    let review = find_review(&appender.pool, id).await?;
    if review.generated_by == caller {
        return Err(Refused::SelfAttestation(format!(
            "caller {caller} generated review {id} and may not attest it"
        )));
    }
    if items(&appender.pool, id, Some(&request.connection_id))
        .await?
        .is_empty()
    {
        return Err(AuditError::NotFound(format!(
            "connection {} in review {id}",
            request.connection_id
        ))
        .into());
    }
    let event = own_event(
        &review.tenant,
        pb::EventKind::ReviewAttested,
        (pb::actor::Kind::Person, caller),
        id,
        &request.connection_id,
        &serde_json::json!({
            "review_id": id.to_string(),
            "decision": decision,
            "note": request.note,
            "recorded_by": caller,
        }),
        appender.clock.now(),
    );
    let event = EventBody {
        writer: caller.to_owned(),
        ..event
    };
    appender.append(std::slice::from_ref(&event)).await?;
    let item = items(&appender.pool, id, Some(&request.connection_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| AuditError::Internal("an attested item went missing".into()))?;
    Ok(item.to_wire(&review))
}

const CSV_COLUMNS: &str = "review_id,tenant,year,quarter,connection_id,app_id,principal,\
clio_user_id,clio_account_id,region,scopes,risk_tier,full_account_access,granted_at,\
last_used_at,grant_age_days,decision,reviewer,decided_at,note\n";

fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn time_text(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| crate::canonical::format_time(&t))
        .unwrap_or_default()
}

/// A review item with its risk tier and whether it grants full account access, as the
/// scope catalogue says now.
type DescribedItem = (ItemRow, String, bool);

/// The review as CSV (header + one row per item) or one JSON document on one line.
pub async fn export(
    pool: &PgPool,
    id: Uuid,
    format: api::ExportFormat,
) -> Result<Vec<u8>, AuditError> {
    let review = find_review(pool, id).await?;
    let rows = items(pool, id, None).await?;
    let described: Vec<DescribedItem> = rows
        .into_iter()
        .map(|item| {
            let scopes = scope_set(&item.scopes);
            let tier = scopes.risk_tier().as_str().to_owned();
            let full = scopes.is_full_account_access();
            (item, tier, full)
        })
        .collect();
    match format {
        api::ExportFormat::Csv => Ok(export_csv(&review, &described)),
        api::ExportFormat::Json => export_json(&review, &described),
        api::ExportFormat::Unspecified => Err(AuditError::invalid("format", "must be CSV or JSON")),
    }
}

fn export_csv(review: &ReviewRow, described: &[DescribedItem]) -> Vec<u8> {
    let mut out = String::from(CSV_COLUMNS);
    for (item, tier, full) in described {
        let fields = [
            review.review_id.to_string(),
            review.tenant.clone(),
            review.year.to_string(),
            review.quarter.to_string(),
            item.connection_id.clone(),
            item.app_id.clone(),
            item.principal.clone(),
            item.clio_user_id.clone(),
            item.clio_account_id.clone(),
            item.region.clone(),
            item.scopes.join(" "),
            tier.clone(),
            full.to_string(),
            time_text(item.granted_at),
            time_text(item.last_used_at),
            item.grant_age_days.to_string(),
            item.decision.clone().unwrap_or_default(),
            item.reviewer.clone().unwrap_or_default(),
            time_text(item.decided_at),
            item.note.clone().unwrap_or_default(),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, field);
        }
        out.push('\n');
    }
    out.into_bytes()
}

fn export_json(review: &ReviewRow, described: &[DescribedItem]) -> Result<Vec<u8>, AuditError> {
    let items: Vec<serde_json::Value> = described
        .iter()
        .map(|(item, tier, full)| {
            serde_json::json!({
                "connection_id": item.connection_id,
                "app_id": item.app_id,
                "principal": item.principal,
                "clio_user_id": item.clio_user_id,
                "clio_account_id": item.clio_account_id,
                "region": item.region,
                "scopes": item.scopes,
                "risk_tier": tier,
                "full_account_access": full,
                "granted_at": item.granted_at.map(|t| crate::canonical::format_time(&t)),
                "last_used_at": item.last_used_at.map(|t| crate::canonical::format_time(&t)),
                "grant_age_days": item.grant_age_days,
                "decision": item.decision,
                "reviewer": item.reviewer,
                "decided_at": item.decided_at.map(|t| crate::canonical::format_time(&t)),
                "note": item.note,
            })
        })
        .collect();
    let document = serde_json::json!({
        "review_id": review.review_id.to_string(),
        "tenant": review.tenant,
        "year": review.year,
        "quarter": review.quarter,
        "generated_at": crate::canonical::format_time(&review.generated_at),
        "unreviewed": described.iter().filter(|(i, _, _)| i.decision.is_none()).count(),
        "items": items,
    });
    let mut out = serde_json::to_vec(&document).map_err(|e| AuditError::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}
