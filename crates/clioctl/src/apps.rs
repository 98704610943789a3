//! `clioctl app ...`: register, approve or reject, list, change and revoke Clio developer apps
//! (auth-svc).

use clap::{Args, Subcommand, ValueEnum};
use proto::auth::v1 as auth;
use proto::common::v1 as common;
use serde_json::{Value, json};

use crate::clients::{Clients, Role};
use crate::connections::{READERS, revocations};
use crate::exit::{Failure, code};
use crate::output::{self, Format, Table};
use crate::paging::PageArgs;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register a Clio developer app (needs tokens.operator). The client secret is read
    /// from CLIOCTL_APP_CLIENT_SECRET or --client-secret-file, never the command line.
    #[command(after_help = "Example:
  CLIOCTL_APP_CLIENT_SECRET=... clioctl app register --tenant firm-1 --name \"Import\" \\
    --client-id abc --redirect-uri https://connect.firm.example/oauth/callback \\
    --scope contacts:read=\"conflict checks\" --scope matters:read=\"reporting\"")]
    Register(RegisterArgs),
    /// Approve a registration so people may connect through it (needs tokens.compliance).
    #[command(
        after_help = "Example:\n  clioctl app approve 7a1c... --note \"reviewed in ticket 42\""
    )]
    Approve {
        app: String,
        /// The scopes version being approved (default: the app's current one).
        #[arg(long)]
        scopes_version: Option<u32>,
        #[arg(long, default_value = "approved with clioctl")]
        note: String,
    },
    /// Refuse a pending registration with the reason (needs tokens.compliance); revising its
    /// scopes (`app update-scopes`) asks for a decision again.
    #[command(
        after_help = "Example:\n  clioctl app reject 7a1c... --note \"write access is not justified\""
    )]
    Reject {
        app: String,
        /// The scopes version being refused (default: the app's current one).
        #[arg(long)]
        scopes_version: Option<u32>,
        /// Why (required): the operator and the audit log read it.
        #[arg(long)]
        note: String,
    },
    /// List a tenant's apps.
    #[command(
        after_help = "Example:\n  clioctl app list --tenant firm-1 --status pending-approval"
    )]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, value_enum)]
        status: Option<AppStatus>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one app.
    #[command(after_help = "Example:\n  clioctl app get 7a1c...")]
    Get { app: String },
    /// Replace an app's declared scopes (needs tokens.operator). The app needs approval
    /// again; connections made under the earlier scopes show as drifted.
    #[command(after_help = "Example:
  clioctl app update-scopes 7a1c... --scope contacts:read=\"conflict checks\" --reason \"drop matters\"")]
    UpdateScopes {
        app: String,
        /// The new declared scope and why: FAMILY:read|write=JUSTIFICATION (repeatable).
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<common::ScopeJustification>,
        /// Why the scopes change (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Replace an app's client secret after regenerating it in Clio's developer portal
    /// (needs tokens.operator). Read from CLIOCTL_APP_CLIENT_SECRET or
    /// --client-secret-file, never the command line.
    #[command(after_help = "Example:
  CLIOCTL_APP_CLIENT_SECRET=... clioctl app replace-secret 7a1c... --reason \"regenerated after a leak\"")]
    ReplaceSecret {
        app: String,
        #[command(flatten)]
        secret: ClientSecret,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Revoke an app and every connection made through it (needs tokens.operator).
    #[command(
        after_help = "Example:\n  clioctl app revoke 7a1c... --reason \"vendor contract ended\""
    )]
    Revoke {
        app: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
pub struct RegisterArgs {
    #[arg(long)]
    tenant: String,
    /// A name people recognise on the consent page.
    #[arg(long)]
    name: String,
    #[arg(long, value_enum, default_value = "us")]
    region: Region,
    /// The app's Clio client id.
    #[arg(long)]
    client_id: String,
    #[command(flatten)]
    secret: ClientSecret,
    /// A redirect URI registered with Clio (repeatable).
    #[arg(long = "redirect-uri", required = true)]
    redirect_uris: Vec<String>,
    /// A declared scope and why the app needs it: FAMILY:read|write=JUSTIFICATION
    /// (repeatable).
    #[arg(long = "scope", required = true, value_parser = parse_scope)]
    scopes: Vec<common::ScopeJustification>,
    /// The app uses PKCE.
    #[arg(long)]
    pkce: bool,
}

/// Where a Clio client secret comes from: never the command line's history.
#[derive(Args)]
pub struct ClientSecret {
    /// The app's Clio client secret (prefer the environment variable).
    #[arg(long, env = "CLIOCTL_APP_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// A file holding the client secret.
    #[arg(long, conflicts_with = "client_secret")]
    client_secret_file: Option<std::path::PathBuf>,
}

impl ClientSecret {
    fn read(self) -> anyhow::Result<String> {
        match (self.client_secret, self.client_secret_file) {
            (Some(secret), _) => Ok(secret),
            (None, Some(path)) => Ok(std::fs::read_to_string(&path)
                .map_err(|e| {
                    Failure::new(code::USAGE, format!("cannot read {}: {e}", path.display()))
                })?
                .trim()
                .to_owned()),
            (None, None) => Err(Failure::new(
                code::USAGE,
                "the client secret is missing: set CLIOCTL_APP_CLIENT_SECRET or pass \
                 --client-secret-file",
            )
            .into()),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Region {
    Us,
    Eu,
    Ca,
    Au,
}

impl From<Region> for common::Region {
    fn from(region: Region) -> Self {
        match region {
            Region::Us => common::Region::Us,
            Region::Eu => common::Region::Eu,
            Region::Ca => common::Region::Ca,
            Region::Au => common::Region::Au,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AppStatus {
    PendingApproval,
    Approved,
    Revoked,
    Rejected,
}

fn parse_scope(text: &str) -> Result<common::ScopeJustification, String> {
    let (scope, why) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not FAMILY:ACCESS=JUSTIFICATION"))?;
    let scope: scope_catalog::Scope = scope.parse().map_err(|e| format!("{e}"))?;
    if why.trim().is_empty() {
        return Err(format!("{scope} needs a justification after '='"));
    }
    Ok(common::ScopeJustification {
        scope: Some(scope.to_wire()),
        justification: why.to_owned(),
    })
}

pub async fn app(clients: &Clients, format: Format, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Register(args) => register(clients, format, args).await,
        AppCommand::Approve {
            app,
            scopes_version,
            note,
        } => decide(clients, format, app, true, scopes_version, note).await,
        AppCommand::Reject {
            app,
            scopes_version,
            note,
        } => decide(clients, format, app, false, scopes_version, note).await,
        AppCommand::List {
            tenant,
            status,
            page,
        } => list(clients, format, tenant, status, page).await,
        AppCommand::Get { app } => get(clients, format, app).await,
        AppCommand::UpdateScopes {
            app,
            scopes,
            reason,
        } => update_scopes(clients, format, app, scopes, reason).await,
        AppCommand::ReplaceSecret {
            app,
            secret,
            reason,
        } => replace_secret(clients, format, app, secret, reason).await,
        AppCommand::Revoke { app, reason } => revoke(clients, format, app, reason).await,
    }
}

async fn register(clients: &Clients, format: Format, args: RegisterArgs) -> anyhow::Result<()> {
    let client_secret = args.secret.read()?;
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let app = target
        .call(
            "RegisterApp",
            client.register_app(auth::RegisterAppRequest {
                tenant: args.tenant,
                name: args.name,
                region: common::Region::from(args.region) as i32,
                client_id: args.client_id,
                client_secret,
                redirect_uris: args.redirect_uris,
                declared_scopes: args.scopes,
                pkce_enabled: args.pkce,
            }),
        )
        .await?;
    one_app(&app).print_one(format)
}

/// `app approve` and `app reject`: compliance's decision on the declaration it read.
async fn decide(
    clients: &Clients,
    format: Format,
    app: String,
    approve: bool,
    scopes_version: Option<u32>,
    note: String,
) -> anyhow::Result<()> {
    let scopes_version = match scopes_version {
        Some(version) => version,
        None => current_scopes_version(clients, &app).await?,
    };
    let (mut client, target) = clients.auth(&[Role::Compliance])?;
    let app = if approve {
        let request = auth::ApproveAppRequest {
            app_id: app,
            scopes_version,
            note,
        };
        target
            .call("ApproveApp", client.approve_app(request))
            .await?
    } else {
        let request = auth::RejectAppRequest {
            app_id: app,
            scopes_version,
            note,
        };
        target.call("RejectApp", client.reject_app(request)).await?
    };
    one_app(&app).print_one(format)
}

/// The scopes version `app approve` or `app reject` decides on when none is given: the
/// app's current one.
async fn current_scopes_version(clients: &Clients, app: &str) -> anyhow::Result<u32> {
    let (mut client, target) = clients.auth(&[Role::Compliance])?;
    Ok(target
        .call(
            "GetApp",
            client.get_app(auth::GetAppRequest {
                app_id: app.to_owned(),
            }),
        )
        .await?
        .scopes_version)
}

async fn list(
    clients: &Clients,
    format: Format,
    tenant: String,
    status: Option<AppStatus>,
    page: PageArgs,
) -> anyhow::Result<()> {
    let status = status.map_or(0, |s| {
        (match s {
            AppStatus::PendingApproval => auth::AppStatus::PendingApproval,
            AppStatus::Approved => auth::AppStatus::Approved,
            AppStatus::Revoked => auth::AppStatus::Revoked,
            AppStatus::Rejected => auth::AppStatus::Rejected,
        }) as i32
    });
    let (mut client, target) = clients.auth(&READERS)?;
    let mut table = Table::new(&APP_COLUMNS);
    let mut token = page.first_token();
    loop {
        let answer = target
            .call(
                "ListApps",
                client.list_apps(auth::ListAppsRequest {
                    tenant: tenant.clone(),
                    region: 0,
                    status,
                    page: Some(common::PageRequest {
                        page_size: page.size(),
                        page_token: token,
                    }),
                }),
            )
            .await?;
        for app in &answer.apps {
            table.row(app_cells(app));
        }
        match page.next(answer.page.unwrap_or_default().next_page_token) {
            Some(next) => token = next,
            None => break,
        }
    }
    table.print(format)
}

async fn get(clients: &Clients, format: Format, app: String) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&READERS)?;
    let app = target
        .call(
            "GetApp",
            client.get_app(auth::GetAppRequest { app_id: app }),
        )
        .await?;
    one_app(&app).print_one(format)
}

async fn update_scopes(
    clients: &Clients,
    format: Format,
    app: String,
    scopes: Vec<common::ScopeJustification>,
    reason: String,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let app = target
        .call(
            "UpdateAppScopes",
            client.update_app_scopes(auth::UpdateAppScopesRequest {
                app_id: app,
                declared_scopes: scopes,
                reason,
            }),
        )
        .await?;
    one_app(&app).print_one(format)
}

async fn replace_secret(
    clients: &Clients,
    format: Format,
    app: String,
    secret: ClientSecret,
    reason: String,
) -> anyhow::Result<()> {
    let client_secret = secret.read()?;
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let app = target
        .call(
            "ReplaceAppSecret",
            client.replace_app_secret(auth::ReplaceAppSecretRequest {
                app_id: app,
                client_secret,
                reason,
            }),
        )
        .await?;
    one_app(&app).print_one(format)
}

async fn revoke(
    clients: &Clients,
    format: Format,
    app: String,
    reason: String,
) -> anyhow::Result<()> {
    let (mut client, target) = clients.auth(&[Role::Operator])?;
    let answer = target
        .call(
            "RevokeApp",
            client.revoke_app(auth::RevokeAppRequest {
                app_id: app.clone(),
                reason,
            }),
        )
        .await?;
    if format == Format::Table {
        println!(
            "revoked app {}: {} connection(s)",
            answer.app_id,
            answer.results.len()
        );
    }
    revocations(&answer.results).print(format)
}

const APP_COLUMNS: [&str; 9] = [
    "app_id",
    "tenant",
    "name",
    "region",
    "client_id",
    "status",
    "risk_tier",
    "scopes_version",
    "declared_scopes",
];

fn app_cells(app: &auth::AppRegistration) -> Vec<Value> {
    let scopes: Vec<common::Scope> = app
        .declared_scopes
        .iter()
        .filter_map(|s| s.scope.clone())
        .collect();
    vec![
        json!(app.app_id),
        json!(app.tenant),
        json!(app.name),
        json!(output::region(app.region)),
        json!(app.client_id),
        json!(output::enum_text(
            auth::AppStatus::try_from(app.status)
                .ok()
                .map(|s| s.as_str_name()),
            "APP_STATUS_"
        )),
        json!(output::tier(app.risk_tier)),
        json!(app.scopes_version),
        output::scopes(&scopes),
    ]
}

fn one_app(app: &auth::AppRegistration) -> Table {
    let mut columns = APP_COLUMNS.to_vec();
    columns.extend([
        "full_account_access",
        "pkce_enabled",
        "redirect_uris",
        "registered_by",
        "approved_by",
        "created_at",
        "approved_at",
        "rejected_by",
        "rejection_note",
    ]);
    let mut table = Table::new(&columns);
    let mut cells = app_cells(app);
    cells.extend([
        json!(app.full_account_access),
        json!(app.pkce_enabled),
        output::strings(&app.redirect_uris),
        json!(app.registered_by),
        json!(app.approved_by),
        output::time(app.created_at.as_ref()),
        output::time(app.approved_at.as_ref()),
        json!(app.rejected_by),
        json!(app.rejection_note),
    ]);
    table.row(cells);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_needs_a_known_family_and_a_justification() {
        let parsed = parse_scope("contacts:read=conflict checks").unwrap();
        assert_eq!(parsed.justification, "conflict checks");
        assert_eq!(parsed.scope.unwrap().family, "contacts");
        assert!(parse_scope("contacts:read").is_err());
        assert!(parse_scope("contacts:read=").is_err());
        assert!(parse_scope("nonsense:read=why").is_err());
    }
}
