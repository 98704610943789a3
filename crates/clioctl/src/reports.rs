//! `clioctl report ...`: ComplianceService's reports. Every command needs
//! tokens.compliance.

use clap::{Subcommand, ValueEnum};
use proto::audit::v1 as audit;
use proto::audit::v1::compliance_service_client::ComplianceServiceClient;
use serde_json::json;

use crate::clients::{Authed, Clients, Target};
use crate::output::{self, Format, Table};

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Connections grouped by risk tier, most dangerous first.
    #[command(after_help = "Example:\n  clioctl report risk-tiers --tenant firm-1 --min-tier high")]
    RiskTiers {
        #[arg(long)]
        tenant: String,
        /// Only tiers at or above this one.
        #[arg(long, value_enum)]
        min_tier: Option<Tier>,
    },
    /// Apps declaring read/write on every family, with their live connections.
    #[command(after_help = "Example:\n  clioctl report full-access-apps --tenant firm-1")]
    FullAccessApps {
        #[arg(long)]
        tenant: String,
    },
    /// Connections able to write, with writes performed without an approval.
    #[command(after_help = "Example:\n  clioctl report write-capable --tenant firm-1 --output csv")]
    WriteCapable {
        #[arg(long)]
        tenant: String,
    },
    /// Connections unused for --idle-days (default 90).
    #[command(after_help = "Example:\n  clioctl report zombies --tenant firm-1 --idle-days 30")]
    Zombies {
        #[arg(long)]
        tenant: String,
        /// Days without use that make a connection a zombie.
        #[arg(long, default_value_t = 90)]
        idle_days: u32,
        /// Reproduce the report as of this RFC 3339 time (default now).
        #[arg(long, value_parser = output::parse_time)]
        as_of: Option<prost_types::Timestamp>,
    },
    /// Offboardings and the 2-hour deauthorization protocol: flagged and open ones.
    #[command(after_help = "Example:
  clioctl report offboarding --tenant firm-1 --from 2026-01-01T00:00:00Z")]
    Offboarding {
        #[arg(long)]
        tenant: String,
        /// Offboardings from this RFC 3339 time (inclusive).
        #[arg(long, value_parser = output::parse_time)]
        from: Option<prost_types::Timestamp>,
        /// Offboardings before this RFC 3339 time.
        #[arg(long, value_parser = output::parse_time)]
        to: Option<prost_types::Timestamp>,
    },
    /// Connections whose grant differs from their app's current declaration.
    #[command(after_help = "Example:\n  clioctl report scope-drift --tenant firm-1")]
    ScopeDrift {
        #[arg(long)]
        tenant: String,
    },
    /// One Clio login connected by several people.
    #[command(after_help = "Example:\n  clioctl report shared-logins --tenant firm-1")]
    SharedLogins {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Tier {
    Low,
    Medium,
    High,
    VeryHigh,
}

impl From<Tier> for proto::common::v1::RiskTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Low => proto::common::v1::RiskTier::Low,
            Tier::Medium => proto::common::v1::RiskTier::Medium,
            Tier::High => proto::common::v1::RiskTier::High,
            Tier::VeryHigh => proto::common::v1::RiskTier::VeryHigh,
        }
    }
}

/// The ComplianceService client every report and review command calls.
pub(crate) type ComplianceClient = ComplianceServiceClient<Authed>;

pub async fn report(
    clients: &Clients,
    format: Format,
    command: ReportCommand,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.compliance()?;
    let (client, target) = (&mut client, &target);
    let table = match command {
        ReportCommand::RiskTiers { tenant, min_tier } => {
            risk_tiers(client, target, tenant, min_tier).await?
        }
        ReportCommand::FullAccessApps { tenant } => {
            full_access_apps(client, target, tenant).await?
        }
        ReportCommand::WriteCapable { tenant } => write_capable(client, target, tenant).await?,
        ReportCommand::Zombies {
            tenant,
            idle_days,
            as_of,
        } => zombies(client, target, tenant, idle_days, as_of).await?,
        ReportCommand::Offboarding { tenant, from, to } => {
            offboarding(client, target, tenant, from, to).await?
        }
        ReportCommand::ScopeDrift { tenant } => scope_drift(client, target, tenant).await?,
        ReportCommand::SharedLogins { tenant } => shared_logins(client, target, tenant).await?,
    };
    table.print(format)
}

async fn risk_tiers(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
    min_tier: Option<Tier>,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "ConnectionsByRiskTier",
            client.connections_by_risk_tier(audit::ConnectionsByRiskTierRequest {
                tenant,
                min_tier: min_tier.map_or(0, |t| proto::common::v1::RiskTier::from(t) as i32),
            }),
        )
        .await?;
    let mut table = Table::new(&[
        "tier",
        "connection_id",
        "principal",
        "app_id",
        "clio_user_id",
        "scopes",
        "full_account_access",
        "granted_at",
        "last_used_at",
    ]);
    for group in &answer.tiers {
        for c in &group.connections {
            table.row(vec![
                json!(output::tier(group.tier)),
                json!(c.connection_id),
                json!(c.principal),
                json!(c.app_id),
                json!(c.clio_user_id),
                output::scopes(&c.scopes),
                json!(c.full_account_access),
                output::time(c.granted_at.as_ref()),
                output::time(c.last_used_at.as_ref()),
            ]);
        }
    }
    Ok(table)
}

async fn full_access_apps(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "FullAccessApps",
            client.full_access_apps(audit::FullAccessAppsRequest { tenant }),
        )
        .await?;
    let mut table = Table::new(&[
        "app_id",
        "risk_tier",
        "full_account_access",
        "live_connections",
        "declared_scopes",
    ]);
    for app in &answer.apps {
        table.row(vec![
            json!(app.app_id),
            json!(output::tier(app.risk_tier)),
            json!(app.full_account_access),
            json!(app.live_connections),
            output::scopes(&app.declared_scopes),
        ]);
    }
    Ok(table)
}

async fn write_capable(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "WriteCapableConnections",
            client.write_capable_connections(audit::WriteCapableConnectionsRequest { tenant }),
        )
        .await?;
    let mut table = Table::new(&[
        "connection_id",
        "principal",
        "app_id",
        "write_scopes",
        "writes_performed",
        "writes_approved",
        "writes_unapproved",
        "unapproved_write_event_ids",
    ]);
    for w in &answer.connections {
        let c = w.connection.clone().unwrap_or_default();
        table.row(vec![
            json!(c.connection_id),
            json!(c.principal),
            json!(c.app_id),
            output::scopes(&w.write_scopes),
            json!(w.writes_performed),
            json!(w.writes_approved),
            json!(w.writes_unapproved),
            output::strings(&w.unapproved_write_event_ids),
        ]);
    }
    Ok(table)
}

async fn zombies(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
    idle_days: u32,
    as_of: Option<prost_types::Timestamp>,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "ZombieConnections",
            client.zombie_connections(audit::ZombieConnectionsRequest {
                tenant,
                idle_days,
                as_of,
            }),
        )
        .await?;
    let mut table = Table::new(&[
        "connection_id",
        "principal",
        "app_id",
        "idle_days",
        "last_used_at",
        "risk_tier",
        "scopes",
    ]);
    for z in &answer.connections {
        let c = z.connection.clone().unwrap_or_default();
        table.row(vec![
            json!(c.connection_id),
            json!(c.principal),
            json!(c.app_id),
            json!(z.idle_days),
            output::time(c.last_used_at.as_ref()),
            json!(output::tier(c.risk_tier)),
            output::scopes(&c.scopes),
        ]);
    }
    Ok(table)
}

async fn offboarding(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
    from: Option<prost_types::Timestamp>,
    to: Option<prost_types::Timestamp>,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "OffboardingReport",
            client.offboarding_report(audit::OffboardingReportRequest {
                tenant,
                offboarded: Some(audit::TimeRange { from, to }),
            }),
        )
        .await?;
    let mut table = Table::new(&[
        "principal",
        "departed_at",
        "offboarded_at",
        "connections_revoked",
        "failed_at_clio",
        "seconds_to_clio_confirmation",
        "open",
        "flagged",
        "flag_reasons",
        "live_connection_ids",
    ]);
    for e in &answer.entries {
        table.row(vec![
            json!(e.principal),
            output::time(e.departed_at.as_ref()),
            output::time(e.offboarded_at.as_ref()),
            json!(e.connections_revoked),
            json!(e.revocations_failed_at_clio),
            json!(e.seconds_to_clio_confirmation),
            json!(e.open),
            json!(e.flagged),
            output::strings(&e.flag_reasons),
            output::strings(&e.live_connection_ids),
        ]);
    }
    Ok(table)
}

async fn scope_drift(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "ScopeDriftReport",
            client.scope_drift_report(audit::ScopeDriftReportRequest { tenant }),
        )
        .await?;
    let mut table = Table::new(&[
        "connection_id",
        "principal",
        "app_id",
        "granted",
        "declared",
        "missing_from_grant",
        "beyond_declaration",
    ]);
    for d in &answer.connections {
        let c = d.connection.clone().unwrap_or_default();
        table.row(vec![
            json!(c.connection_id),
            json!(c.principal),
            json!(c.app_id),
            output::scopes(&c.scopes),
            output::scopes(&d.app_declared_scopes),
            output::scopes(&d.missing_from_grant),
            output::scopes(&d.beyond_declaration),
        ]);
    }
    Ok(table)
}

async fn shared_logins(
    client: &mut ComplianceClient,
    target: &Target,
    tenant: String,
) -> anyhow::Result<Table> {
    let answer = target
        .call(
            "SharedLoginSuspicions",
            client.shared_login_suspicions(audit::SharedLoginSuspicionsRequest { tenant }),
        )
        .await?;
    let mut table = Table::new(&[
        "clio_user_id",
        "clio_account_id",
        "principals",
        "connection_ids",
    ]);
    for s in &answer.suspicions {
        table.row(vec![
            json!(s.clio_user_id),
            json!(s.clio_account_id),
            output::strings(&s.principals),
            output::strings(&s.connection_ids),
        ]);
    }
    Ok(table)
}
