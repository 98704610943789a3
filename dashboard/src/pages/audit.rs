//! The audit log: search by kind and actor, verify the tenant's hash chain on demand, and
//! a live tail (server-sent events from audit-svc's `Watch`, shown by `tail.js`).

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use proto::audit::v1::{QueryRequest, VerifyRequest, WatchRequest};
use proto::common::v1::{AuditEvent, EventKind, PageRequest};
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, render};
use crate::AppState;
use crate::backends::AUDIT;
use crate::display;
use crate::error::PageError;
use crate::verifications::Verification;

const PAGE_SIZE: u32 = 100;

/// An event as a row shows it.
#[derive(serde::Serialize)]
pub struct EventRow {
    pub sequence: u64,
    pub occurred_at: String,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub reason: String,
    pub source: String,
}

impl From<AuditEvent> for EventRow {
    fn from(e: AuditEvent) -> EventRow {
        EventRow {
            sequence: e.sequence,
            occurred_at: display::when(e.occurred_at.as_ref()),
            kind: kind_name(e.kind),
            actor: e.actor.map(|a| a.id).unwrap_or_default(),
            subject: e.subject.map(|s| s.id).unwrap_or_default(),
            reason: e.reason,
            source: e.source,
        }
    }
}

fn kind_name(kind: i32) -> String {
    EventKind::try_from(kind).map_or_else(
        |_| "unknown".into(),
        |k| {
            k.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_ascii_lowercase()
        },
    )
}

/// Every event kind by its wire name (`connection_revoked`), for the search's choice.
fn kinds() -> Vec<String> {
    (1..=64)
        .filter_map(|k| EventKind::try_from(k).ok())
        .map(|k| kind_name(k as i32))
        .collect()
}

fn kind_of(name: &str) -> Result<Option<EventKind>, PageError> {
    if name.is_empty() {
        return Ok(None);
    }
    EventKind::from_str_name(&format!("EVENT_KIND_{}", name.to_ascii_uppercase()))
        .map(Some)
        .ok_or_else(|| PageError::bad_request("kind: not an event kind"))
}

pub struct Verified {
    pub last_checkpoint: String,
    pub ok: bool,
    pub events_checked: u64,
    pub checkpoints_checked: u64,
    pub head_hash: String,
    pub broken: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    tenants: Vec<String>,
    search: Search,
    kinds: Vec<String>,
    events: Vec<EventRow>,
    next: Option<String>,
    /// The newest sequence of the tenant (the first page is newest first, unfiltered or
    /// not): the live tail starts after it.
    newest: u64,
    verified: Option<Verified>,
}

#[derive(Deserialize, Default)]
pub struct Search {
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub page_token: String,
    /// `1`: verify the chain and show the outcome.
    #[serde(default)]
    pub verify: String,
}

pub async fn search(
    State(state): State<AppState>,
    signed: Signed,
    Query(mut search): Query<Search>,
) -> Result<Html<String>, PageError> {
    signed.require(Role::Compliance, "The audit log")?;
    search.tenant = state.tenant(&search.tenant)?;
    let person = &signed.0.person;
    let answer = state
        .backends
        .audit(person)
        .query(QueryRequest {
            tenant: search.tenant.clone(),
            kinds: kind_of(&search.kind)?
                .map(|k| k as i32)
                .into_iter()
                .collect(),
            actor_id: search.actor.trim().to_owned(),
            newest_first: true,
            page: Some(PageRequest {
                page_size: PAGE_SIZE,
                page_token: search.page_token.clone(),
            }),
            ..QueryRequest::default()
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?
        .into_inner();
    let verified = if search.verify == "1" {
        let v = state
            .backends
            .audit(person)
            .verify(VerifyRequest {
                tenant: search.tenant.clone(),
                ..VerifyRequest::default()
            })
            .await
            .map_err(|s| PageError::from_status(AUDIT, &s))?
            .into_inner();
        state.verifications.record(
            &search.tenant,
            Verification {
                at: chrono::Utc::now(),
                by: person.name.clone(),
                ok: v.ok,
                events_checked: v.events_checked,
                checkpoints_checked: v.checkpoints_checked,
                last_checkpoint: last_checkpoint(&v),
            },
        );
        Some(Verified {
            last_checkpoint: last_checkpoint(&v),
            ok: v.ok,
            events_checked: v.events_checked,
            checkpoints_checked: v.checkpoints_checked,
            broken: v
                .first_broken
                .map(|b| format!("event {} ({}): {}", b.sequence, b.event_id, b.reason))
                .unwrap_or_default(),
            head_hash: v.head_hash,
        })
    } else {
        None
    };
    let events: Vec<EventRow> = answer.events.into_iter().map(EventRow::from).collect();
    let filtered = !search.kind.is_empty() || !search.actor.trim().is_empty();
    let newest = if filtered || !search.page_token.is_empty() {
        head(&state, &signed, &search.tenant).await?
    } else {
        events.first().map_or(0, |e| e.sequence)
    };
    let next = answer
        .page
        .filter(|p| !p.next_page_token.is_empty())
        .map(|p| {
            super::query_string(
                "/audit",
                &[
                    ("tenant", search.tenant.as_str()),
                    ("kind", search.kind.as_str()),
                    ("actor", search.actor.as_str()),
                    ("page_token", p.next_page_token.as_str()),
                ],
            )
        });
    render(&AuditPage {
        chrome: signed.chrome("audit"),
        tenants: state.tenants.clone(),
        kinds: kinds(),
        events,
        next,
        newest,
        verified,
        search,
    })
}

/// The tenant's newest signed checkpoint, in words.
fn last_checkpoint(v: &proto::audit::v1::VerifyResponse) -> String {
    match v.last_checkpoint_sequence {
        0 => "none yet".to_owned(),
        sequence => format!(
            "#{sequence} signed {}",
            display::when(v.last_checkpoint_signed_at.as_ref())
        ),
    }
}

/// The sequence of the tenant's newest event (0: none yet).
async fn head(state: &AppState, signed: &Signed, tenant: &str) -> Result<u64, PageError> {
    Ok(newest_event(state, signed, tenant)
        .await?
        .map_or(0, |e| e.sequence))
}

/// The tenant's newest event, if any.
pub async fn newest_event(
    state: &AppState,
    signed: &Signed,
    tenant: &str,
) -> Result<Option<EventRow>, PageError> {
    let newest = state
        .backends
        .audit(&signed.0.person)
        .query(QueryRequest {
            tenant: tenant.to_owned(),
            newest_first: true,
            page: Some(PageRequest {
                page_size: 1,
                page_token: String::new(),
            }),
            ..QueryRequest::default()
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?
        .into_inner();
    Ok(newest.events.into_iter().next().map(EventRow::from))
}

#[derive(Deserialize)]
pub struct TailQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    after: u64,
}

/// New events of the tenant as they are recorded, one server-sent event each (a JSON
/// [`EventRow`]); the stream ends when audit-svc's does, and the browser reconnects.
pub async fn tail(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<TailQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    signed.require(Role::Compliance, "The audit log")?;
    let tenant = state.tenant(&query.tenant)?;
    let events = state
        .backends
        .audit(&signed.0.person)
        .watch(WatchRequest {
            tenant,
            after_sequence: query.after,
            kinds: Vec::new(),
        })
        .await
        .map_err(|s| PageError::from_status(AUDIT, &s))?
        .into_inner();
    let stream = events
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(|event| async move {
            let row = EventRow::from(event.ok()?);
            let data = serde_json::to_string(&row).ok()?;
            Some(Ok(Event::default().id(row.sequence.to_string()).data(data)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
