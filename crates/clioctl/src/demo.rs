//! The end-to-end demo the local stack runs (`deploy/local/run-stack.sh demo`): register a
//! read-only import app, have compliance approve it, connect a person out-of-band (the
//! simulator plays the person clicking ALLOW ACCESS and copying the success code), import
//! five resources, and show the audit record.

use proto::auth::v1 as auth;
use proto::common::v1 as common;
use scope_catalog::{Access, Family, Scope};
use secrecy::ExposeSecret;

use crate::clients::{Clients, DemoConfig, Role, Service};
use crate::output::Format;
use crate::{audit, connections, jobs};

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

    // A service listens before its dependencies are up (import-svc's queue session): a
    // demo started with the stack waits for all three to say SERVING.
    println!("0. waiting until auth-svc, import-svc and audit-svc are ready");
    wait_until_serving(clients).await?;

    println!("1. registering the read-only import app (operator)");
    let app = register_app(clients, &demo).await?;
    println!(
        "   app {} ({}), tier {:?}",
        app.app_id,
        app.name,
        tier(app.risk_tier)
    );

    println!("2. compliance approves it");
    approve_app(clients, &app).await?;

    println!("3. {DEMO_PRINCIPAL} connects out-of-band");
    let connection = connect_out_of_band(clients, &demo, &app).await?;

    println!("4. importing {}", RESOURCES.join(", "));
    let job = import_resources(clients, &connection).await?;
    print_sample_contacts(clients, &job).await?;

    println!("5. the audit record");
    print_audit_record(clients, &demo).await?;
    println!("demo finished: job {} completed", job.job_id);
    Ok(())
}

/// How long the demo waits for the stack to be ready.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(90);

/// Waits until each service's gRPC health says SERVING (its dependencies answer).
async fn wait_until_serving(clients: &Clients) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let give_up = tokio::time::Instant::now() + READY_WITHIN;
    for (service, role) in [
        (Service::Auth, Role::Operator),
        (Service::Import, Role::Operator),
        (Service::Audit, Role::Compliance),
    ] {
        let (channel, _) = clients.channel(service, &[role])?;
        let mut health = HealthClient::new(channel);
        loop {
            let status = health
                .check(HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status);
            if status
                .as_ref()
                .is_ok_and(|s| *s == ServingStatus::Serving as i32)
            {
                break;
            }
            if tokio::time::Instant::now() >= give_up {
                anyhow::bail!(
                    "{} was not ready within {}s (its health: {status:?}); see its log under .stack/",
                    service.name(),
                    READY_WITHIN.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// Approves the demo app as compliance, unless an earlier run did.
async fn approve_app(clients: &Clients, app: &auth::AppRegistration) -> anyhow::Result<()> {
    let (mut compliance, target) = clients.auth(&[Role::Compliance])?;
    let approved = compliance
        .approve_app(auth::ApproveAppRequest {
            app_id: app.app_id.clone(),
            scopes_version: app.scopes_version,
            note: "demo".into(),
        })
        .await;
    match approved {
        // Approved by an earlier run.
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
        other => drop(target.call("ApproveApp", async { other }).await?),
    }
    Ok(())
}

/// Connects the demo principal through the app, the simulator playing the person.
async fn connect_out_of_band(
    clients: &Clients,
    demo: &DemoConfig,
    app: &auth::AppRegistration,
) -> anyhow::Result<auth::Connection> {
    let (mut connector, target) = clients.auth(&[Role::Connector])?;
    let started = target
        .call(
            "StartAuthorization",
            connector.start_authorization(auth::StartAuthorizationRequest {
                app_id: app.app_id.clone(),
                principal: DEMO_PRINCIPAL.into(),
                mode: auth::AuthorizationMode::OutOfBand as i32,
                reconnect_connection_id: String::new(),
            }),
        )
        .await?;
    println!("   Clio authorize URL: {}", started.authorization_url);
    let pasted = crate::demo::simulated_consent(demo, &started.authorization_url).await?;
    println!("   the person copies from Clio's page: {pasted:?}");
    let connection = connections::complete(clients, &started.state, &pasted).await?;
    connections::print_connection(&connection);
    Ok(connection)
}

/// Imports the demo resources through `connection` and waits for the job to complete.
async fn import_resources(
    clients: &Clients,
    connection: &auth::Connection,
) -> anyhow::Result<proto::imports::v1::Job> {
    let resources: Vec<String> = RESOURCES.iter().map(|r| (*r).to_owned()).collect();
    let job_id = jobs::submit_job(
        clients,
        proto::imports::v1::ImportJob {
            connection_id: connection.connection_id.clone(),
            resources,
            mode: proto::imports::v1::ImportMode::Full as i32,
            requested_by: "clioctl".into(),
            ..Default::default()
        },
    )
    .await?;
    println!("submitted job {job_id}");
    let job = jobs::watch(clients, Format::Table, &job_id).await?;
    let status = proto::imports::v1::JobStatus::try_from(job.status)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    if job.status != proto::imports::v1::JobStatus::Completed as i32 {
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
    Ok(job)
}

/// Prints a few of the contacts the job stored.
async fn print_sample_contacts(
    clients: &Clients,
    job: &proto::imports::v1::Job,
) -> anyhow::Result<()> {
    let (mut reader, target) = clients.import(&[Role::DataReader])?;
    let sample = target
        .call(
            "ListRecords",
            reader.list_records(proto::imports::v1::ListRecordsRequest {
                clio_account_id: job.clio_account_id.clone(),
                resource: "contacts".into(),
                page_size: 3,
                ..Default::default()
            }),
        )
        .await?;
    for record in sample.records {
        println!("   contact {}: {}", record.clio_id, record.data_json);
    }
    Ok(())
}

/// Verifies the tenant's audit chain and prints its connections by risk tier.
async fn print_audit_record(clients: &Clients, demo: &DemoConfig) -> anyhow::Result<()> {
    audit::verify(clients, Format::Table, &demo.tenant, 0, 0).await?;
    let (mut compliance, target) = clients.compliance()?;
    let tiers = target
        .call(
            "ConnectionsByRiskTier",
            compliance.connections_by_risk_tier(proto::audit::v1::ConnectionsByRiskTierRequest {
                tenant: demo.tenant.clone(),
                min_tier: 0,
            }),
        )
        .await?;
    for group in tiers.tiers {
        println!(
            "   {:?}: {} connection(s)",
            tier(group.tier),
            group.connections.len()
        );
    }
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
    let (mut operator, target) = clients.auth(&[Role::Operator])?;
    let existing = target
        .call(
            "ListApps",
            operator.list_apps(auth::ListAppsRequest {
                tenant: demo.tenant.clone(),
                ..Default::default()
            }),
        )
        .await?;
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
    let request = auth::RegisterAppRequest {
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
    };
    target
        .call("RegisterApp", operator.register_app(request))
        .await
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
