//! Finding unbilled time: one connection's calendar over a date range, read from Clio
//! page by page and dropped as it is read, each entry judged by the tenant's
//! [`rules`](super::rules), then checked against what exists already: a suggestion for
//! the entry (in the database, before Clio is asked) and an activity linked to it in Clio
//! (`activities?calendar_entry_id=`). What is left becomes a pending suggestion.
//!
//! Every Clio call goes through the connection's rate gate, shared with its import jobs.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use clio_api::{ClioError, ListQuery, Page};
use scope_catalog::{Access, Family, Scope};
use service_runtime::clock::SharedClock;
use sqlx::PgPool;
use url::Url;

use super::clio::ClioCalls;
use super::rules::{self, Draft, Skip, TenantRules};
use super::store::{self, Origin, SuggestionRow};
use crate::leases::{ConnectionInfo, Lease, LeaseError, Leases};

/// Calendar entries asked for per page.
const PAGE_SIZE: u32 = 200;

/// The scopes detection reads with; writing needs `activities:write` on top.
pub const READ_SCOPES: [Scope; 2] = [
    Scope::new(Family::Calendar, Access::Read),
    Scope::new(Family::Activities, Access::Read),
];

/// The scope an approved suggestion is written with. Detection refuses a connection whose
/// grant lacks it: its suggestions could never be written.
pub const WRITE_SCOPE: Scope = Scope::new(Family::Activities, Access::Write);

/// Why detection stopped.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The connection cannot serve it (revoked, needs reconnecting, a grant without a
    /// scope detection or writing needs, Clio refusing the calendar).
    #[error("{0}")]
    Precondition(String),
    /// Clio or auth-svc did not answer; trying again later may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<LeaseError> for DetectError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::Refused(why) | LeaseError::Unusable(why) => DetectError::Precondition(why),
            LeaseError::Unavailable(why) => DetectError::Unavailable(why),
        }
    }
}

/// What one detection found.
#[derive(Debug, Default)]
pub struct Detection {
    pub entries_read: u32,
    pub created: Vec<SuggestionRow>,
    pub skipped: Skipped,
}

/// Entries that gave no suggestion, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub by_rule: BTreeMap<&'static str, u32>,
    pub already_billed: u32,
    pub already_suggested: u32,
}

impl Skipped {
    fn rule(&mut self, skip: Skip) {
        let name = match skip {
            Skip::WithoutMatter => "without_matter",
            Skip::AllDay => "all_day",
            Skip::Cancelled => "cancelled",
            Skip::TooShort => "too_short",
            Skip::WithoutUser => "without_user",
            Skip::Unreadable => "unreadable",
        };
        *self.by_rule.entry(name).or_default() += 1;
    }

    pub fn count(&self, rule: &str) -> u32 {
        self.by_rule.get(rule).copied().unwrap_or_default()
    }
}

/// The connection detection reads: its id and what auth-svc says of it.
pub struct Target<'a> {
    pub connection_id: &'a str,
    pub connection: &'a ConnectionInfo,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub requested_by: &'a str,
}

#[derive(Clone)]
pub struct Detector {
    pub pool: PgPool,
    pub leases: Leases,
    pub clio: ClioCalls,
    pub clock: SharedClock,
    pub rules: TenantRules,
}

/// A Clio failure as detection reports it: Clio down is worth trying again; anything else
/// is Clio refusing this connection.
fn clio_failed(error: ClioError) -> DetectError {
    match error {
        ClioError::Exhausted { .. }
        | ClioError::RateLimited { .. }
        | ClioError::Transient { .. }
        | ClioError::Cancelled => DetectError::Unavailable(format!("Clio unavailable: {error}")),
        other => DetectError::Precondition(format!("Clio refused: {other}")),
    }
}

impl Detector {
    pub async fn detect(&self, target: &Target<'_>) -> Result<Detection, DetectError> {
        let connection = target.connection;
        connection
            .usable
            .clone()
            .map_err(DetectError::Precondition)?;
        for needed in READ_SCOPES.iter().chain([&WRITE_SCOPE]) {
            if !connection.granted.covers(needed) {
                return Err(DetectError::Precondition(format!(
                    "connection {}'s grant lacks {needed}, which billing suggestions need",
                    target.connection_id
                )));
            }
        }
        let lease = self
            .leases
            .lease(
                target.connection_id,
                &READ_SCOPES,
                "billing suggestions: detect",
                false,
            )
            .await?;
        let origin = Origin {
            connection_id: target.connection_id,
            tenant: &connection.tenant,
            clio_account_id: &lease.account_id,
            owner: &connection.principal,
            created_by: target.requested_by,
            at: self.clock.now(),
        };
        let rules = self.rules.of(&connection.tenant);
        let mut detection = Detection::default();
        let mut next = Some(calendar_url(&lease.api_base, target.from, target.to)?);
        while let Some(url) = next.take() {
            let page = self.page(&lease, target.connection_id, &url).await?;
            next = page.next.clone();
            detection.entries_read +=
                u32::try_from(page.records.len() + page.skipped.len()).unwrap_or(u32::MAX);
            for _ in &page.skipped {
                detection.skipped.rule(Skip::Unreadable);
            }
            let mut drafts = Vec::new();
            for entry in &page.records {
                match rules::assess(entry, rules) {
                    Ok(draft) => drafts.push(draft),
                    Err(skip) => detection.skipped.rule(skip),
                }
            }
            self.suggest(&lease, &origin, drafts, &mut detection)
                .await?;
        }
        Ok(detection)
    }

    /// Records a suggestion for each draft neither suggested before nor billed in Clio.
    async fn suggest(
        &self,
        lease: &Lease,
        origin: &Origin<'_>,
        drafts: Vec<Draft>,
        detection: &mut Detection,
    ) -> Result<(), DetectError> {
        let ids: Vec<String> = drafts.iter().map(|d| d.calendar_entry_id.clone()).collect();
        let suggested = store::suggested(&self.pool, origin.clio_account_id, &ids).await?;
        for draft in drafts {
            if suggested.contains(&draft.calendar_entry_id) {
                detection.skipped.already_suggested += 1;
                continue;
            }
            if self.billed(lease, origin, &draft.calendar_entry_id).await? {
                detection.skipped.already_billed += 1;
                continue;
            }
            match store::insert(&self.pool, origin, &draft).await? {
                Some(row) => detection.created.push(row),
                None => detection.skipped.already_suggested += 1,
            }
        }
        Ok(())
    }

    /// Whether Clio has an activity linked to the calendar entry.
    async fn billed(
        &self,
        lease: &Lease,
        origin: &Origin<'_>,
        calendar_entry_id: &str,
    ) -> Result<bool, DetectError> {
        let linked = self
            .clio
            .linked_activity(lease, origin.connection_id, calendar_entry_id)
            .await
            .map_err(clio_failed)?;
        Ok(linked.any)
    }

    async fn page(
        &self,
        lease: &Lease,
        connection_id: &str,
        url: &Url,
    ) -> Result<Page, DetectError> {
        self.clio
            .page(lease, connection_id, url)
            .await
            .map_err(clio_failed)
    }
}

/// The connection's calendar entries overlapping `[from, to)`, with only the fields the
/// rules read.
fn calendar_url(
    api_base: &Url,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Url, DetectError> {
    let filters = BTreeMap::from([
        (
            "from".to_owned(),
            from.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        (
            "to".to_owned(),
            to.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    ]);
    ListQuery {
        resource: "calendar_entries",
        fields: rules::CALENDAR_FIELDS,
        limit: PAGE_SIZE,
        updated_since: None,
        filters: &filters,
    }
    .first_page_url(api_base)
    .map_err(|e| DetectError::Unavailable(format!("bad calendar URL: {e}")))
}
