//! Offboarding a departing person: an operator starts it with the departure time, and
//! everyone with the compliance role follows each connection against the 2-hour protocol
//! (from departure to Clio's confirmed deauthorization), refreshed while any is open.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, Redirect};
use chrono::{NaiveDateTime, TimeZone, Utc};
use proto::audit::v1::OffboardingReportRequest;
use proto::auth::v1::OffboardUserRequest;
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, done, notice, render};
use crate::AppState;
use crate::backends::{AUDIT, AUTH};
use crate::display;
use crate::error::PageError;

/// The protocol: every connection deauthorized at Clio within 2 hours of departure.
const PROTOCOL_SECS: i64 = 2 * 3600;

pub struct ConnectionLine {
    pub connection_id: String,
    pub outcome: String,
    pub revoked_at: String,
    pub confirmed_at: String,
    pub retries: u32,
    pub detail: String,
}

pub struct Entry {
    pub principal: String,
    pub departed_at: String,
    pub deadline: String,
    pub offboarded_at: String,
    pub open: bool,
    pub flagged: bool,
    pub flags: String,
    /// Departure to Clio's last confirmation (to now while open), as `1 h 05 min`.
    pub elapsed: String,
    pub within_protocol: bool,
    pub connections: Vec<ConnectionLine>,
    pub live: String,
}

#[derive(Template)]
#[template(path = "offboarding.html")]
struct OffboardingPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    tenants: Vec<String>,
    /// None without the compliance role.
    entries: Option<Vec<Entry>>,
    /// Reload every few seconds while an offboarding is open.
    refresh: bool,
}

#[derive(Deserialize)]
pub struct PageQuery {
    done: Option<String>,
}

fn duration(secs: u64) -> String {
    let minutes = secs / 60;
    format!("{} h {:02} min", minutes / 60, minutes % 60)
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let entries = if signed.0.person.has(Role::Compliance) {
        let mut entries = Vec::new();
        for tenant in &state.tenants {
            let report = state
                .backends
                .compliance(&signed.0.person)
                .offboarding_report(OffboardingReportRequest {
                    tenant: tenant.clone(),
                    offboarded: None,
                })
                .await
                .map_err(|s| PageError::from_status(AUDIT, &s))?
                .into_inner();
            entries.extend(report.entries.into_iter().map(|e| {
                let deadline = e.departed_at.as_ref().map(|d| prost_types::Timestamp {
                    seconds: d.seconds + PROTOCOL_SECS,
                    nanos: 0,
                });
                Entry {
                    departed_at: display::when(e.departed_at.as_ref()),
                    deadline: display::when(deadline.as_ref()),
                    offboarded_at: display::when(e.offboarded_at.as_ref()),
                    elapsed: duration(e.seconds_to_clio_confirmation),
                    within_protocol: i64::try_from(e.seconds_to_clio_confirmation)
                        .is_ok_and(|s| s <= PROTOCOL_SECS),
                    open: e.open,
                    flagged: e.flagged,
                    flags: e.flag_reasons.join("; "),
                    live: e.live_connection_ids.join(", "),
                    connections: e
                        .connections
                        .into_iter()
                        .map(|c| ConnectionLine {
                            outcome: c.clio_outcome.replace('_', " "),
                            revoked_at: display::when(c.revoked_at.as_ref()),
                            confirmed_at: display::when(c.clio_confirmed_at.as_ref()),
                            retries: c.deauthorize_retries,
                            detail: c.detail,
                            connection_id: c.connection_id,
                        })
                        .collect(),
                    principal: e.principal,
                }
            }));
        }
        Some(entries)
    } else {
        None
    };
    let refresh = entries
        .as_ref()
        .is_some_and(|entries| entries.iter().any(|e| e.open));
    render(&OffboardingPage {
        chrome: signed.chrome("offboarding"),
        notice: notice(query.done.as_deref()),
        tenants: state.tenants.clone(),
        entries,
        refresh,
    })
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    principal: String,
    /// `datetime-local` in UTC (`2026-11-30T09:15`); empty: now.
    #[serde(default)]
    departed_at: String,
    #[serde(default)]
    reason: String,
}

pub async fn start(
    State(state): State<AppState>,
    signed: Signed,
    Form(form): Form<StartForm>,
) -> Result<Redirect, PageError> {
    signed.check_form(&form.csrf)?;
    signed.require(Role::Operator, "Offboarding a person")?;
    let tenant = state.tenant(&form.tenant)?;
    let principal = form.principal.trim();
    if principal.is_empty() {
        return Err(PageError::bad_request(
            "principal: name the person who is leaving",
        ));
    }
    let departed_at = match form.departed_at.trim() {
        "" => None,
        text => {
            let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
                .map_err(|_| {
                    PageError::bad_request(
                        "departed_at: a date and time like 2026-11-30T09:15 (UTC)",
                    )
                })?;
            Some(proto::time::timestamp(Utc.from_utc_datetime(&local)))
        }
    };
    state
        .backends
        .auth(&signed.0.person)
        .offboard_user(OffboardUserRequest {
            principal: principal.to_owned(),
            reason: form.reason.trim().to_owned(),
            tenant,
            departed_at,
        })
        .await
        .map_err(|s| PageError::from_status(AUTH, &s))?;
    Ok(done("/offboarding", "offboarded"))
}
