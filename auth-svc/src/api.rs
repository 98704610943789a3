//! The gRPC handlers: each validates its request into domain types, calls the operation,
//! and maps the one error type to a status.

use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_server::AuthService;
use service_runtime::Caller;
use tonic::{Request, Response, Status};

use crate::app_secret;
use crate::apps;
use crate::connect;
use crate::connections;
use crate::context::Context;
use crate::domain::{AppId, ConnectionId, required_text};
use crate::error::AuthError;
use crate::key_rotation;
use crate::leases;
use crate::offboarding;
use crate::paging::Page;
use crate::revocation;
use proto::time::timestamp;

#[derive(Clone)]
pub struct Api {
    pub ctx: Context,
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Caller::of(request).cloned()
}

type Reply<T> = Result<Response<T>, Status>;

impl Api {
    /// ApproveApp and RejectApp: compliance's verdict on the declaration it read.
    async fn decide(
        &self,
        caller: &Caller,
        verdict: apps::Verdict,
        app_id: &str,
        scopes_version: u32,
        note: &str,
    ) -> Reply<pb::AppRegistration> {
        let id = AppId::parse("app_id", app_id)?;
        if scopes_version == 0 {
            return Err(AuthError::invalid("scopes_version", "name the version decided on").into());
        }
        let app = apps::decide(&self.ctx, caller, id, verdict, scopes_version, note.trim()).await?;
        Ok(Response::new(app.to_wire()))
    }
}

#[tonic::async_trait]
impl AuthService for Api {
    async fn register_app(
        &self,
        request: Request<pb::RegisterAppRequest>,
    ) -> Reply<pb::AppRegistration> {
        let caller = caller(&request)?;
        let registration = apps::Registration::try_from(request.into_inner())?;
        let app = apps::register(&self.ctx, &caller, registration).await?;
        Ok(Response::new(app.to_wire()))
    }

    async fn approve_app(
        &self,
        request: Request<pb::ApproveAppRequest>,
    ) -> Reply<pb::AppRegistration> {
        let caller = caller(&request)?;
        let pb::ApproveAppRequest {
            app_id,
            scopes_version,
            note,
        } = request.into_inner();
        self.decide(
            &caller,
            apps::Verdict::Approve,
            &app_id,
            scopes_version,
            &note,
        )
        .await
    }

    async fn reject_app(
        &self,
        request: Request<pb::RejectAppRequest>,
    ) -> Reply<pb::AppRegistration> {
        let caller = caller(&request)?;
        let pb::RejectAppRequest {
            app_id,
            scopes_version,
            note,
        } = request.into_inner();
        if note.trim().is_empty() {
            return Err(AuthError::invalid("note", "say why the app is rejected").into());
        }
        self.decide(
            &caller,
            apps::Verdict::Reject,
            &app_id,
            scopes_version,
            &note,
        )
        .await
    }

    async fn get_app(&self, request: Request<pb::GetAppRequest>) -> Reply<pb::AppRegistration> {
        let id = AppId::parse("app_id", &request.get_ref().app_id)?;
        Ok(Response::new(apps::get(&self.ctx, id).await?.to_wire()))
    }

    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Reply<pb::ListAppsResponse> {
        let request = request.into_inner();
        let filter = apps::AppFilter::try_from(&request)?;
        let page = Page::from_wire(request.page.as_ref())?;
        let (apps, page) = apps::list(&self.ctx, filter, page).await?;
        Ok(Response::new(pb::ListAppsResponse {
            apps: apps.iter().map(apps::App::to_wire).collect(),
            page: Some(page),
        }))
    }

    async fn update_app_scopes(
        &self,
        request: Request<pb::UpdateAppScopesRequest>,
    ) -> Reply<pb::AppRegistration> {
        let caller = caller(&request)?;
        let change = apps::ScopeChange::try_from(request.into_inner())?;
        Ok(Response::new(
            apps::update_scopes(&self.ctx, &caller, change)
                .await?
                .to_wire(),
        ))
    }

    async fn replace_app_secret(
        &self,
        request: Request<pb::ReplaceAppSecretRequest>,
    ) -> Reply<pb::AppRegistration> {
        let caller = caller(&request)?;
        let replacement = app_secret::SecretReplacement::try_from(request.into_inner())?;
        Ok(Response::new(
            app_secret::replace(&self.ctx, &caller, replacement)
                .await?
                .to_wire(),
        ))
    }

    async fn start_authorization(
        &self,
        request: Request<pb::StartAuthorizationRequest>,
    ) -> Reply<pb::StartAuthorizationResponse> {
        let caller = caller(&request)?;
        let start = connect::StartRequest::try_from(request.into_inner())?;
        let started = connect::start(&self.ctx, &caller, start).await?;
        Ok(Response::new(pb::StartAuthorizationResponse {
            authorization_url: started.authorization_url,
            state: secrecy::ExposeSecret::expose_secret(&started.state).to_owned(),
            expires_at: Some(timestamp(started.expires_at)),
            mode: match started.mode {
                crate::domain::Mode::Web => pb::AuthorizationMode::Web,
                crate::domain::Mode::OutOfBand => pb::AuthorizationMode::OutOfBand,
            } as i32,
        }))
    }

    async fn complete_authorization(
        &self,
        request: Request<pb::CompleteAuthorizationRequest>,
    ) -> Reply<pb::Connection> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        if request.state.trim().is_empty() {
            return Err(AuthError::invalid("state", "must not be empty").into());
        }
        let answer = connect::parse_pasted(&request.code)?;
        let completer = connect::Completer::Caller(&caller.name);
        let connection = connect::complete(&self.ctx, &request.state, completer, answer).await?;
        Ok(Response::new(connection.to_wire()))
    }

    async fn get_connection(
        &self,
        request: Request<pb::GetConnectionRequest>,
    ) -> Reply<pb::Connection> {
        let id = ConnectionId::parse("connection_id", &request.get_ref().connection_id)?;
        Ok(Response::new(
            connections::get(&self.ctx, id).await?.to_wire(),
        ))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Reply<pb::ListConnectionsResponse> {
        let request = request.into_inner();
        let filter = connections::ConnectionFilter::try_from(&request)?;
        let page = Page::from_wire(request.page.as_ref())?;
        let (list, page) = connections::list(&self.ctx, filter, page).await?;
        Ok(Response::new(pb::ListConnectionsResponse {
            connections: list.iter().map(connections::Connection::to_wire).collect(),
            page: Some(page),
        }))
    }

    async fn lease_access_token(
        &self,
        request: Request<pb::LeaseAccessTokenRequest>,
    ) -> Reply<pb::LeaseAccessTokenResponse> {
        // Borrowed, not cloned like the other RPCs' callers: this is the hot one.
        let caller = Caller::of(&request)?;
        let lease = leases::LeaseRequest::try_from(request.get_ref())?;
        let leased = leases::lease(&self.ctx, caller, lease).await;
        self.ctx.metrics.leased(&leased);
        Ok(Response::new(leased?))
    }

    async fn revoke_connection(
        &self,
        request: Request<pb::RevokeConnectionRequest>,
    ) -> Reply<pb::RevocationResult> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = ConnectionId::parse("connection_id", &request.connection_id)?;
        let reason = required_text("reason", &request.reason, 2_000)?;
        let result = revocation::revoke_connection(&self.ctx, &caller.name, id, &reason).await?;
        Ok(Response::new(result.to_wire()))
    }

    async fn offboard_user(
        &self,
        request: Request<pb::OffboardUserRequest>,
    ) -> Reply<pb::OffboardUserResponse> {
        let caller = caller(&request)?;
        let offboard = offboarding::OffboardRequest::try_from(request.into_inner())?;
        let principal = offboard.principal.0.clone();
        let done = offboarding::offboard(&self.ctx, &caller, offboard).await?;
        Ok(Response::new(pb::OffboardUserResponse {
            principal,
            results: done
                .results
                .iter()
                .map(revocation::Revocation::to_wire)
                .collect(),
            started_at: Some(timestamp(done.started_at)),
            completed_at: Some(timestamp(done.completed_at)),
            departed_at: Some(timestamp(done.departed_at)),
            failures: done
                .failures
                .into_iter()
                .map(|(id, error)| pb::OffboardFailure {
                    connection_id: id.to_string(),
                    error,
                })
                .collect(),
        }))
    }

    async fn revoke_app(
        &self,
        request: Request<pb::RevokeAppRequest>,
    ) -> Reply<pb::RevokeAppResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = AppId::parse("app_id", &request.app_id)?;
        let reason = required_text("reason", &request.reason, 2_000)?;
        let results = revocation::revoke_app(&self.ctx, &caller, id, &reason).await?;
        Ok(Response::new(pb::RevokeAppResponse {
            app_id: id.to_string(),
            results: results
                .iter()
                .map(revocation::Revocation::to_wire)
                .collect(),
        }))
    }

    async fn rotate_encryption_key(
        &self,
        request: Request<pb::RotateEncryptionKeyRequest>,
    ) -> Reply<pb::RotateEncryptionKeyResponse> {
        let caller = caller(&request)?;
        let (active_key_id, pending_reencryption) =
            key_rotation::rotate(&self.ctx, &caller, request.get_ref().new_key_id.trim()).await?;
        Ok(Response::new(pb::RotateEncryptionKeyResponse {
            active_key_id,
            pending_reencryption,
        }))
    }
}
