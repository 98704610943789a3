//! The overview a compliance officer opens first: connections by risk tier (with a bar
//! chart), full-access and write-capable apps, zombie candidates, open offboardings, scope
//! drift and shared-login suspicions, all from audit-svc's compliance reports.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Html;
use proto::audit::v1::{
    ConnectionsByRiskTierRequest, FullAccessAppsRequest, OffboardingReportRequest,
    ScopeDriftReportRequest, SharedLoginSuspicionsRequest, WriteCapableConnectionsRequest,
    ZombieConnectionsRequest,
};
use proto::common::v1::RiskTier;
use serde::Deserialize;
use service_runtime::Role;

use super::{Chrome, Signed, render};
use crate::AppState;
use crate::backends::AUDIT;
use crate::display;
use crate::error::PageError;

/// One bar of the risk-tier chart.
pub struct TierBar {
    pub tier: String,
    /// The tier as a CSS class (`tier-very-high`).
    pub class: String,
    pub live: usize,
    /// The bar's length in the chart's units (0..=300).
    pub width: usize,
    /// Its vertical place in the chart.
    pub y: usize,
}

/// A line of one of the lists (who, what, why).
pub struct Finding {
    pub principal: String,
    pub app_id: String,
    pub detail: String,
}

/// One list of findings under its heading.
pub struct Section {
    pub title: &'static str,
    /// The section's element id (tests and links find it by this).
    pub id: &'static str,
    pub findings: Vec<Finding>,
}

/// The audit chain as the overview shows it.
pub struct Chain {
    /// "12,345 events, the newest #12345 at ..." or "no event yet".
    pub head: String,
    /// The last verification through the dashboard, in words; empty when none since start.
    pub last_verified: String,
    pub intact: bool,
}

pub struct Report {
    pub chain: Chain,
    pub tiers: Vec<TierBar>,
    pub live_connections: usize,
    pub sections: Vec<Section>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    tenants: Vec<String>,
    tenant: String,
    /// None for people without the compliance role: they see where to go instead.
    report: Option<Report>,
}

const CHART_WIDTH: usize = 300;
const BAR_PITCH: usize = 28;

#[derive(Deserialize)]
pub struct OverviewQuery {
    tenant: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<OverviewQuery>,
) -> Result<Html<String>, PageError> {
    let tenant = state.tenant(query.tenant.as_deref().unwrap_or_default())?;
    let report = if signed.0.person.has(Role::Compliance) {
        Some(report(&state, &signed, &tenant).await?)
    } else {
        None
    };
    render(&OverviewPage {
        chrome: signed.chrome("overview"),
        tenants: state.tenants.clone(),
        tenant,
        report,
    })
}

async fn report(state: &AppState, signed: &Signed, tenant: &str) -> Result<Report, PageError> {
    let client = state.backends.compliance(&signed.0.person);
    let status = |s: tonic::Status| PageError::from_status(AUDIT, &s);
    // The seven reports are independent: asked at once.
    let (mut c1, mut c2, mut c3, mut c4, mut c5, mut c6, mut c7) = (
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
        client,
    );
    let (tiers, full, write, zombies, offboardings, drift, shared) = tokio::join!(
        c1.connections_by_risk_tier(ConnectionsByRiskTierRequest {
            tenant: tenant.to_owned(),
            ..ConnectionsByRiskTierRequest::default()
        }),
        c2.full_access_apps(FullAccessAppsRequest {
            tenant: tenant.to_owned(),
        }),
        c3.write_capable_connections(WriteCapableConnectionsRequest {
            tenant: tenant.to_owned(),
        }),
        c4.zombie_connections(ZombieConnectionsRequest {
            tenant: tenant.to_owned(),
            ..ZombieConnectionsRequest::default()
        }),
        c5.offboarding_report(OffboardingReportRequest {
            tenant: tenant.to_owned(),
            ..OffboardingReportRequest::default()
        }),
        c6.scope_drift_report(ScopeDriftReportRequest {
            tenant: tenant.to_owned(),
        }),
        c7.shared_login_suspicions(SharedLoginSuspicionsRequest {
            tenant: tenant.to_owned(),
        }),
    );

    let groups = tiers.map_err(status)?.into_inner().tiers;
    let live = |tier: RiskTier| {
        groups
            .iter()
            .filter(|g| g.tier == tier as i32)
            .flat_map(|g| &g.connections)
            .filter(|c| !c.revoked)
            .count()
    };
    let counts: Vec<(RiskTier, usize)> = [
        RiskTier::VeryHigh,
        RiskTier::High,
        RiskTier::Medium,
        RiskTier::Low,
    ]
    .into_iter()
    .map(|t| (t, live(t)))
    .collect();
    let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let tiers = counts
        .iter()
        .enumerate()
        .map(|(i, (tier, n))| TierBar {
            class: format!("tier-{}", display::tier(*tier as i32).replace(' ', "-")),
            tier: display::tier(*tier as i32),
            live: *n,
            width: n * CHART_WIDTH / most,
            y: i * BAR_PITCH,
        })
        .collect();

    let full_access: Vec<Finding> = full
        .map_err(status)?
        .into_inner()
        .apps
        .into_iter()
        .map(|a| Finding {
            principal: String::new(),
            app_id: a.app_id,
            detail: format!(
                "{} live connection(s); declares {}",
                a.live_connections,
                display::scopes(&a.declared_scopes)
            ),
        })
        .collect();
    let write_capable: Vec<Finding> = write
        .map_err(status)?
        .into_inner()
        .connections
        .into_iter()
        .map(|w| {
            let c = w.connection.unwrap_or_default();
            Finding {
                principal: c.principal,
                app_id: c.app_id,
                detail: format!(
                    "may write {}; {} write(s) performed, {} without approval",
                    display::scopes(&w.write_scopes),
                    w.writes_performed,
                    w.writes_unapproved
                ),
            }
        })
        .collect();
    let zombies: Vec<Finding> = zombies
        .map_err(status)?
        .into_inner()
        .connections
        .into_iter()
        .map(|z| {
            let c = z.connection.unwrap_or_default();
            Finding {
                principal: c.principal,
                app_id: c.app_id,
                detail: format!("unused for {} days", z.idle_days),
            }
        })
        .collect();
    let open_offboardings: Vec<Finding> = offboardings
        .map_err(status)?
        .into_inner()
        .entries
        .into_iter()
        .filter(|e| e.open || e.flagged)
        .map(|e| Finding {
            principal: e.principal,
            app_id: String::new(),
            detail: format!(
                "departed {}; {} revoked, {} not confirmed by Clio{}",
                display::when(e.departed_at.as_ref()),
                e.connections_revoked,
                e.revocations_failed_at_clio,
                if e.flag_reasons.is_empty() {
                    String::new()
                } else {
                    format!("; {}", e.flag_reasons.join("; "))
                }
            ),
        })
        .collect();
    let drifted: Vec<Finding> = drift
        .map_err(status)?
        .into_inner()
        .connections
        .into_iter()
        .map(|d| {
            let c = d.connection.unwrap_or_default();
            Finding {
                principal: c.principal,
                app_id: c.app_id,
                detail: format!(
                    "missing from grant: {}; beyond declaration: {}",
                    display::scopes(&d.missing_from_grant),
                    display::scopes(&d.beyond_declaration)
                ),
            }
        })
        .collect();
    let shared_logins: Vec<Finding> = shared
        .map_err(status)?
        .into_inner()
        .suspicions
        .into_iter()
        .map(|s| Finding {
            principal: s.principals.join(", "),
            app_id: String::new(),
            detail: format!(
                "Clio user {} of account {}",
                s.clio_user_id, s.clio_account_id
            ),
        })
        .collect();

    let section = |title, id, findings| Section {
        title,
        id,
        findings,
    };
    let newest = super::audit::newest_event(state, signed, tenant).await?;
    let last = state.verifications.last(tenant);
    let chain = Chain {
        head: newest.map_or_else(
            || "no event yet".to_owned(),
            |e| {
                format!(
                    "{} events, the newest ({}) at {}",
                    e.sequence, e.kind, e.occurred_at
                )
            },
        ),
        intact: last.as_ref().is_none_or(|v| v.ok),
        last_verified: last
            .map(|v| {
                format!(
                    "{} by {}: {} ({} events, {} signed checkpoints checked; the newest checkpoint {})",
                    v.at.format("%Y-%m-%d %H:%M UTC"),
                    v.by,
                    if v.ok { "intact" } else { "BROKEN" },
                    v.events_checked,
                    v.checkpoints_checked,
                    v.last_checkpoint
                )
            })
            .unwrap_or_default(),
    };
    Ok(Report {
        chain,
        live_connections: counts.iter().map(|(_, n)| n).sum(),
        tiers,
        sections: vec![
            section("Full-access apps", "full-access", full_access),
            section("Write-capable connections", "write-capable", write_capable),
            section(
                "Zombie candidates (unused 90 days or more)",
                "zombies",
                zombies,
            ),
            section(
                "Open or flagged offboardings",
                "offboardings",
                open_offboardings,
            ),
            section("Scope drift", "drift", drifted),
            section("Shared-login suspicions", "shared-logins", shared_logins),
        ],
    })
}
