//! Connecting a person through auth-svc's out-of-band flow at the Clio simulator, as a
//! user would: register the app at Clio and at auth-svc, have compliance approve it,
//! start the authorization, consent at the simulator, paste the code. Works with any
//! auth-svc (in-process, a child process) reached at an address.

use std::net::SocketAddr;

use crate::{channel, token_of, with_bearer};
use clio_sim::{AdminClient, AppSpec, ClioSim, Decision, Region};
use proto::auth::v1 as auth;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::common::v1 as common;
use tonic::transport::Channel;

/// Connects `principal` of tenant `firm-1` as Clio user `clio_user` (US) through the
/// auth-svc at `auth_address`, with an app declaring `scopes`. Returns the connection id,
/// or auth-svc's refusal of the completion.
pub async fn connect_out_of_band(
    sim: &ClioSim,
    auth_address: SocketAddr,
    scopes: &[&str],
    principal: &str,
    clio_user: i64,
) -> Result<String, tonic::Status> {
    let mut auth = AuthServiceClient::new(channel(auth_address).await);
    let app_id = approved_app(sim, &mut auth, scopes).await;
    connect_to_app(
        &sim.admin(),
        &mut auth,
        &app_id,
        principal,
        ClioUser::first_account(clio_user),
    )
    .await
}

/// Who approves at the simulator: user `user` (an id, or the 1-based position among
/// the account's users) of Clio account `account` (1-based; see `SimConfig::accounts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClioUser {
    pub account: u32,
    pub user: i64,
}

impl ClioUser {
    /// A user of account 1, the region's usual firm.
    pub fn first_account(user: i64) -> ClioUser {
        ClioUser { account: 1, user }
    }
}

/// Connects `principal` of tenant `firm-1` as `clio_user` through an app already
/// approved at auth-svc ([`approved_app`]), out-of-band: start, consent at the
/// simulator (through `admin`, the simulator's admin client), paste the code. Many connections may share one app (one per principal and
/// Clio user), so a bulk set-up can run many of these at once on clones of one client.
/// Returns the connection id, or auth-svc's refusal (a consent the simulator refused is
/// `FAILED_PRECONDITION`).
pub async fn connect_to_app(
    admin: &AdminClient,
    auth: &mut AuthServiceClient<Channel>,
    app_id: &str,
    principal: &str,
    clio_user: ClioUser,
) -> Result<String, tonic::Status> {
    let started = auth
        .start_authorization(with_bearer(
            auth::StartAuthorizationRequest {
                app_id: app_id.to_owned(),
                principal: principal.into(),
                mode: auth::AuthorizationMode::OutOfBand as i32,
                reconnect_connection_id: String::new(),
            },
            &token_of("connector"),
        ))
        .await?
        .into_inner();
    let consent = admin
        .consent_in_account(
            &started.authorization_url,
            clio_user.account,
            clio_user.user,
            Decision::Allow,
        )
        .await
        .map_err(|error| {
            tonic::Status::unavailable(format!("consent at the simulator: {error:#}"))
        })?;
    // What the person pastes: the approval page's title (`Success code=...`).
    let pasted = match (consent.status, consent.page_title) {
        (status, Some(title)) if status < 400 => title,
        (status, title) => {
            return Err(tonic::Status::failed_precondition(format!(
                "the simulator refused the consent ({status}): {}",
                title.unwrap_or_default()
            )));
        }
    };
    auth.complete_authorization(with_bearer(
        auth::CompleteAuthorizationRequest {
            state: started.state,
            code: pasted,
        },
        &token_of("connector"),
    ))
    .await
    .map(|answer| answer.into_inner().connection_id)
}

/// An app declaring `scopes`, registered at the simulator (US) and at auth-svc and
/// approved by compliance; returns auth-svc's app id.
pub async fn approved_app(
    sim: &ClioSim,
    auth: &mut AuthServiceClient<Channel>,
    scopes: &[&str],
) -> String {
    let app = registered_app(sim, auth, scopes).await;
    auth.approve_app(with_bearer(
        auth::ApproveAppRequest {
            app_id: app.app_id.clone(),
            scopes_version: app.scopes_version,
            note: "approved for the test".into(),
        },
        &token_of("compliance"),
    ))
    .await
    .unwrap();
    app.app_id
}

/// An app declaring `scopes`, registered at the simulator (US) and at auth-svc by the
/// operator, still waiting for compliance's approval.
pub async fn registered_app(
    sim: &ClioSim,
    auth: &mut AuthServiceClient<Channel>,
    scopes: &[&str],
) -> auth::AppRegistration {
    let client_id = format!("app-{}", uuid::Uuid::new_v4().simple());
    let client_secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    let approval = format!("{}/oauth/approval", sim.base_url(Region::Us));
    sim.admin()
        .register_app(
            Region::Us,
            &AppSpec {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                redirect_uris: vec![approval.clone()],
                permissions: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
        )
        .await
        .unwrap();

    let declared = scopes
        .iter()
        .map(|s| common::ScopeJustification {
            scope: Some(s.parse::<scope_catalog::Scope>().unwrap().to_wire()),
            justification: format!("test needs {s}"),
        })
        .collect();
    auth.register_app(with_bearer(
        auth::RegisterAppRequest {
            tenant: "firm-1".into(),
            name: format!("import app {client_id}"),
            region: common::Region::Us as i32,
            client_id,
            client_secret,
            redirect_uris: vec![approval],
            declared_scopes: declared,
            pkce_enabled: false,
        },
        &token_of("operator"),
    ))
    .await
    .unwrap()
    .into_inner()
}
