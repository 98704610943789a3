//! The everyday commands.

use std::io::{BufRead, Write};

use proto::auth::v1 as auth;
use proto::import::v1 as import;
use tokio_stream::StreamExt;

use crate::clients::Clients;

/// Out-of-band connect: show Clio's URL, take the success code the person copies back.
pub async fn connect(
    clients: &Clients,
    app: &str,
    principal: &str,
    code: Option<String>,
) -> anyhow::Result<()> {
    let started = clients
        .auth_as_connector()?
        .start_authorization(auth::StartAuthorizationRequest {
            app_id: app.to_owned(),
            principal: principal.to_owned(),
            mode: auth::AuthorizationMode::OutOfBand as i32,
            reconnect_connection_id: String::new(),
        })
        .await?
        .into_inner();
    println!(
        "Open this page, sign in to Clio and choose ALLOW ACCESS:\n\n  {}\n",
        started.authorization_url
    );
    let code = match code {
        Some(code) => code,
        None => {
            print!("Paste the Clio success code: ");
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    let connection = complete(clients, &started.state, &code).await?;
    print_connection(&connection);
    Ok(())
}

pub async fn complete(
    clients: &Clients,
    state: &str,
    code: &str,
) -> anyhow::Result<auth::Connection> {
    Ok(clients
        .auth_as_connector()?
        .complete_authorization(auth::CompleteAuthorizationRequest {
            state: state.to_owned(),
            code: code.to_owned(),
        })
        .await?
        .into_inner())
}

pub fn print_connection(connection: &auth::Connection) {
    let scopes: Vec<String> = connection
        .granted_scopes
        .iter()
        .map(|s| {
            let access = if s.access == proto::common::v1::Access::Write as i32 {
                "write"
            } else {
                "read"
            };
            format!("{}:{access}", s.family)
        })
        .collect();
    let clio = connection.clio.clone().unwrap_or_default();
    println!(
        "connected: {} (Clio user {} {:?} at {:?}), scopes [{}]",
        connection.connection_id,
        clio.user_id,
        clio.user_name,
        clio.account_name,
        scopes.join(", ")
    );
}

pub async fn import(
    clients: &Clients,
    connection: &str,
    resources: &[String],
    incremental: bool,
) -> anyhow::Result<import::Job> {
    let mode = if incremental {
        import::ImportMode::Incremental
    } else {
        import::ImportMode::Full
    };
    let submitted = clients
        .import()?
        .submit_job(import::SubmitJobRequest {
            job: Some(import::ImportJob {
                connection_id: connection.to_owned(),
                resources: resources.to_vec(),
                mode: mode as i32,
                requested_by: "clioctl".into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    println!("submitted job {}", submitted.job_id);
    watch(clients, &submitted.job_id).await
}

/// Prints progress until the job ends; returns its final state.
pub async fn watch(clients: &Clients, job_id: &str) -> anyhow::Result<import::Job> {
    let mut stream = clients
        .import()?
        .watch_job(import::WatchJobRequest {
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(progress) = stream.next().await {
        let progress = progress?;
        let Some(job) = progress.job else { continue };
        let fetched: u64 = job.progress.iter().map(|p| p.records_fetched).sum();
        let status = import::JobStatus::try_from(job.status)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        match import::job_progress::Kind::try_from(progress.kind) {
            Ok(import::job_progress::Kind::RateLimitWait) => {
                println!("  waiting {} ms for Clio's rate limit", progress.wait_ms);
            }
            Ok(import::job_progress::Kind::Page) => println!(
                "  +{} records ({fetched} fetched, {:.0} records/s, eta {} s)",
                progress.page_records, progress.records_per_second, progress.eta_seconds
            ),
            _ => println!("  {status} ({fetched} records fetched)"),
        }
        last = Some(job);
    }
    let job = last.ok_or_else(|| anyhow::anyhow!("the watch ended without any state"))?;
    for resource in &job.progress {
        println!(
            "  {}: {} pages, {} fetched, {} written, {} deleted",
            resource.resource,
            resource.pages,
            resource.records_fetched,
            resource.records_written,
            resource.records_deleted
        );
    }
    if !job.failure_reason.is_empty() {
        println!("  reason: {}", job.failure_reason);
    }
    Ok(job)
}

pub async fn revoke(clients: &Clients, connection: &str, reason: &str) -> anyhow::Result<()> {
    let result = clients
        .auth_as_operator()?
        .revoke_connection(auth::RevokeConnectionRequest {
            connection_id: connection.to_owned(),
            reason: reason.to_owned(),
        })
        .await?
        .into_inner();
    println!(
        "revoked {}: Clio said {:?} {}",
        result.connection_id,
        outcome(result.clio_outcome),
        result.clio_detail
    );
    Ok(())
}

pub async fn offboard(clients: &Clients, principal: &str, reason: &str) -> anyhow::Result<()> {
    let response = clients
        .auth_as_operator()?
        .offboard_user(auth::OffboardUserRequest {
            principal: principal.to_owned(),
            reason: reason.to_owned(),
            tenant: String::new(),
            departed_at: None,
        })
        .await?
        .into_inner();
    for result in &response.results {
        println!(
            "  {}: {:?} {}",
            result.connection_id,
            outcome(result.clio_outcome),
            result.clio_detail
        );
    }
    println!(
        "offboarded {}: {} connections revoked",
        response.principal,
        response.results.len()
    );
    Ok(())
}

fn outcome(code: i32) -> &'static str {
    auth::ClioRevocationOutcome::try_from(code)
        .map(|o| o.as_str_name())
        .unwrap_or("?")
}

pub async fn verify(clients: &Clients, tenant: &str) -> anyhow::Result<()> {
    let verdict = clients
        .audit()?
        .verify(proto::audit::v1::VerifyRequest {
            tenant: tenant.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if verdict.ok {
        println!(
            "audit chain of {tenant}: intact ({} events, {} signed checkpoints, head {})",
            verdict.events_checked, verdict.checkpoints_checked, verdict.head_hash
        );
        Ok(())
    } else {
        let broken = verdict.first_broken.unwrap_or_default();
        anyhow::bail!(
            "audit chain of {tenant} is broken at event {} ({}): {}",
            broken.sequence,
            broken.event_id,
            broken.reason
        )
    }
}
