//! The end-to-end demo the local stack runs (`deploy/local/run-stack.sh demo`): register a
//! read-only import app, have compliance approve it, connect a person out-of-band (the
//! simulator plays the person clicking ALLOW ACCESS and copying the success code), import
//! five resources, and show the audit record.

use proto::auth::v1 as auth;
use proto::common::v1 as common;
use scope_catalog::{Access, Family, Scope};
use secrecy::ExposeSecret;

use crate::clients::{Clients, DemoConfig};
use crate::commands;

const DEMO_PRINCIPAL: &str = "alice@firm.example";
const RESOURCES: [&str; 5] = [
    "contacts",
    "matters",
    "calendar_entries",
    "activities",
    "users",
];

pub async fn run(clients: &Clients) -> anyhow::Result<()> {
    let demo = clients
        .config
        .demo
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the config has no [demo] section"))?;

    println!("1. registering the read-only import app (operator)");
    let app = register_app(clients, &demo).await?;
    println!(
        "   app {} ({}), tier {:?}",
        app.app_id,
        app.name,
        tier(app.risk_tier)
    );

    println!("2. compliance approves it");
    clients
        .auth_as_compliance()?
        .approve_app(auth::ApproveAppRequest {
            app_id: app.app_id.clone(),
            scopes_version: app.scopes_version,
            note: "demo".into(),
        })
        .await
        .or_else(|status| {
            if status.code() == tonic::Code::FailedPrecondition {
                Ok(tonic::Response::new(app.clone()))
            } else {
                Err(status)
            }
        })?;

    println!("3. {DEMO_PRINCIPAL} connects out-of-band");
    let started = clients
        .auth_as_connector()?
        .start_authorization(auth::StartAuthorizationRequest {
            app_id: app.app_id.clone(),
            principal: DEMO_PRINCIPAL.into(),
            mode: auth::AuthorizationMode::OutOfBand as i32,
            reconnect_connection_id: String::new(),
        })
        .await?
        .into_inner();
    println!("   Clio authorize URL: {}", started.authorization_url);
    let pasted = crate::demo::simulated_consent(&demo, &started.authorization_url).await?;
    println!("   the person copies from Clio's page: {pasted:?}");
    let connection = commands::complete(clients, &started.state, &pasted).await?;
    commands::print_connection(&connection);

    println!("4. importing {}", RESOURCES.join(", "));
    let resources: Vec<String> = RESOURCES.iter().map(|r| (*r).to_owned()).collect();
    let job = commands::import(clients, &connection.connection_id, &resources, false).await?;
    let status = proto::import::v1::JobStatus::try_from(job.status)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    if job.status != proto::import::v1::JobStatus::Completed as i32 {
        anyhow::bail!("the demo import ended {status}: {}", job.failure_reason);
    }
    let fetched: u64 = job.progress.iter().map(|p| p.records_fetched).sum();
    let written: u64 = job.progress.iter().map(|p| p.records_written).sum();
    // A second demo run finds the records already stored: it reads them all again but
    // writes only what changed in Clio since.
    println!(
        "   imported {fetched} records into Postgres, {written} new or changed (account {})",
        job.clio_account_id
    );
    let sample = clients
        .records()?
        .list_records(proto::import::v1::ListRecordsRequest {
            clio_account_id: job.clio_account_id.clone(),
            resource: "contacts".into(),
            page_size: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    for record in sample.records {
        println!("   contact {}: {}", record.clio_id, record.data_json);
    }

    println!("5. the audit record");
    commands::verify(clients, &demo.tenant).await?;
    let tiers = clients
        .compliance()?
        .connections_by_risk_tier(proto::audit::v1::ConnectionsByRiskTierRequest {
            tenant: demo.tenant.clone(),
            min_tier: 0,
        })
        .await?
        .into_inner();
    for group in tiers.tiers {
        println!(
            "   {:?}: {} connection(s)",
            tier(group.tier),
            group.connections.len()
        );
    }
    println!("demo finished: job {} completed", job.job_id);
    Ok(())
}

fn tier(code: i32) -> &'static str {
    common::RiskTier::try_from(code)
        .map(|t| t.as_str_name())
        .unwrap_or("?")
}

/// Registers the demo app, or finds it from an earlier run.
async fn register_app(
    clients: &Clients,
    demo: &DemoConfig,
) -> anyhow::Result<auth::AppRegistration> {
    let existing = clients
        .auth_as_operator()?
        .list_apps(auth::ListAppsRequest {
            tenant: demo.tenant.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if let Some(app) = existing
        .apps
        .into_iter()
        .find(|a| a.client_id == demo.client_id)
    {
        return Ok(app);
    }
    let scope = |family, why: &str| common::ScopeJustification {
        scope: Some(Scope::new(family, Access::Read).to_wire()),
        justification: why.to_owned(),
    };
    let app = clients
        .auth_as_operator()?
        .register_app(auth::RegisterAppRequest {
            tenant: demo.tenant.clone(),
            name: "Practice data import (read-only)".into(),
            region: common::Region::Us as i32,
            client_id: demo.client_id.clone(),
            client_secret: demo.client_secret.expose_secret().to_owned(),
            redirect_uris: vec![format!(
                "{}/oauth/approval",
                demo.clio_sim.trim_end_matches('/')
            )],
            declared_scopes: vec![
                scope(Family::Contacts, "client list for conflict checks"),
                scope(Family::Matters, "matter list for reporting"),
                scope(Family::Calendar, "court dates for the docket report"),
                scope(Family::Activities, "time entries for utilisation reports"),
                scope(Family::Users, "who recorded the time"),
            ],
            pkce_enabled: false,
        })
        .await?
        .into_inner();
    Ok(app)
}

/// What the simulator answers for a consent: the browser's view of clicking ALLOW.
#[derive(serde::Deserialize)]
struct Consent {
    page_title: Option<String>,
}

/// Plays the person: the simulator's consent hook opens `authorize_url` as the demo Clio
/// user and clicks ALLOW ACCESS. Out-of-band, Clio then shows a page whose title carries
/// the code, and that title is what the person copies into clioctl.
pub async fn simulated_consent(demo: &DemoConfig, authorize_url: &str) -> anyhow::Result<String> {
    let hook = format!("{}/__sim/consent", demo.clio_sim.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&hook)
        .json(&serde_json::json!({
            "authorize_url": authorize_url,
            "user_id": demo.clio_user_id,
            "decision": "allow",
        }))
        .send()
        .await?
        .error_for_status()?;
    let consent: Consent = response.json().await?;
    consent
        .page_title
        .ok_or_else(|| anyhow::anyhow!("the simulator showed no approval page for {authorize_url}"))
}
