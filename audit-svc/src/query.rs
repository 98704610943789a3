//! Reading events back: `Query` pages and the rows `Watch` streams, both by tenant and
//! after a sequence, so a cursor is just the last sequence seen.

use sqlx::{PgPool, QueryBuilder};

use crate::error::AuditError;
use crate::event::EventRecord;
use crate::store::{EVENT_COLUMNS, db_sequence, decode_event};
use crate::validation::Bounds;

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Larger requests are clamped to this.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Which events of a tenant to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub tenant: String,
    /// Kind names (`connection_granted`); empty means every kind.
    pub kinds: Vec<String>,
    /// `(kind, id)` of the subject.
    pub subject: Option<(String, String)>,
    pub actor_id: Option<String>,
    pub occurred: Bounds,
}

/// Where a page of events starts and which way it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Sequences greater than this, oldest first (0: from the start).
    After(u64),
    /// Sequences less than this, newest first (`None`: from the newest).
    Before(Option<u64>),
}

/// Up to `limit` events matching `filter` with sequence greater than `after`, in order.
pub async fn events_after(
    pool: &PgPool,
    filter: &EventFilter,
    after: u64,
    limit: u32,
) -> Result<Vec<EventRecord>, AuditError> {
    events_page(pool, filter, Cursor::After(after), limit).await
}

/// Up to `limit` events matching `filter` from `cursor`, in the cursor's order.
pub async fn events_page(
    pool: &PgPool,
    filter: &EventFilter,
    cursor: Cursor,
    limit: u32,
) -> Result<Vec<EventRecord>, AuditError> {
    let mut sql = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = "
    ));
    sql.push_bind(&filter.tenant);
    match cursor {
        Cursor::After(after) => {
            sql.push(" AND sequence > ")
                .push_bind(db_sequence("page.page_token", after)?);
        }
        Cursor::Before(Some(before)) => {
            sql.push(" AND sequence < ")
                .push_bind(db_sequence("page.page_token", before)?);
        }
        Cursor::Before(None) => {}
    }
    if !filter.kinds.is_empty() {
        sql.push(" AND kind = ANY(")
            .push_bind(&filter.kinds)
            .push(")");
    }
    if let Some((kind, id)) = &filter.subject {
        sql.push(" AND subject_kind = ").push_bind(kind);
        sql.push(" AND subject_id = ").push_bind(id);
    }
    if let Some(actor) = &filter.actor_id {
        sql.push(" AND actor_id = ").push_bind(actor);
    }
    if let Some(from) = filter.occurred.0 {
        sql.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = filter.occurred.1 {
        sql.push(" AND occurred_at < ").push_bind(to);
    }
    sql.push(match cursor {
        Cursor::After(_) => " ORDER BY sequence LIMIT ",
        Cursor::Before(_) => " ORDER BY sequence DESC LIMIT ",
    })
    .push_bind(i64::from(limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(decode_event).collect()
}

/// The token of the page after `last` (the last event of this page) in `cursor`'s order.
pub fn next_page_token(cursor: Cursor, last: u64) -> String {
    match cursor {
        Cursor::After(_) => page_token(last),
        Cursor::Before(_) => format!("before:{last}"),
    }
}

/// The cursor a request's page token and order ask for. A token continues only in the
/// order it was issued for.
pub fn parse_cursor(token: &str, newest_first: bool) -> Result<Cursor, AuditError> {
    if !newest_first {
        return parse_page_token(token).map(Cursor::After);
    }
    if token.is_empty() {
        return Ok(Cursor::Before(None));
    }
    token
        .strip_prefix("before:")
        .and_then(|s| s.parse().ok())
        .map(|s| Cursor::Before(Some(s)))
        .ok_or_else(|| {
            AuditError::invalid(
                "page.page_token",
                "not a token this service issued for newest_first",
            )
        })
}

/// The page token after `sequence`.
pub fn page_token(sequence: u64) -> String {
    format!("after:{sequence}")
}

/// The sequence a page token continues after (empty: from the start).
pub fn parse_page_token(token: &str) -> Result<u64, AuditError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("after:")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AuditError::invalid("page.page_token", "not a token this service issued"))
}

/// The effective page size of a request.
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}
