//! The web dashboard: server-rendered pages over the three services' gRPC APIs, for the
//! people who will not use a CLI (compliance officers, operators, lawyers approving their
//! billing suggestions).
//!
//! - **Each person acts as themselves.** The dashboard holds, per person, the service
//!   credential the services know them by, and presents it on every call it makes for
//!   them; the services authorise and audit the person, never "the dashboard".
//! - **No database of its own, no reads of the services' databases**: everything shown
//!   comes from gRPC, like any other client.
//! - **Sign-in** by name and argon2id password hash from the configuration; sessions live
//!   in memory behind a random cookie (HttpOnly, SameSite=Strict).
//! - **Every state change** is a POST carrying the session's CSRF token, from this origin;
//!   every response carries a strict CSP (no inline script or style) and
//!   `frame-ancestors 'none'`.

pub mod backends;
pub mod config;
pub mod display;
pub mod error;
pub mod oidc;
pub mod pages;
pub mod people;
pub mod security;
pub mod sessions;
pub mod verifications;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use service_runtime::CancellationToken;
use tokio::net::TcpListener;

use crate::backends::Backends;
use crate::config::DashboardConfig;
use crate::people::People;
use crate::sessions::Sessions;

/// What every handler reads.
pub struct Dashboard {
    /// The tenants the overview offers, the first by default.
    pub tenants: Vec<String>,
    pub people: People,
    pub sessions: Sessions,
    pub backends: Backends,
    pub verifications: verifications::Verifications,
    /// Sign-in through the firm's identity provider, when configured.
    pub oidc: Option<oidc::Provider>,
}

pub type AppState = Arc<Dashboard>;

impl Dashboard {
    /// The tenant a request names, if this dashboard shows it; none named: the first.
    pub fn tenant(&self, asked: &str) -> Result<String, error::PageError> {
        match asked.trim() {
            "" => Ok(self.tenants.first().cloned().unwrap_or_default()),
            t if self.tenants.iter().any(|known| known == t) => Ok(t.to_owned()),
            _ => Err(error::PageError::bad_request(
                "tenant: not one this dashboard shows",
            )),
        }
    }
}

/// The dashboard's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview::show))
        .route(
            "/signin",
            get(pages::signin::form).post(pages::signin::submit),
        )
        .route("/signout", post(pages::signin::sign_out))
        .route("/signin/oidc", get(pages::signin::oidc_start))
        .route("/signin/oidc/callback", get(pages::signin::oidc_callback))
        .route("/apps", get(pages::apps::list))
        .route("/apps/{app_id}/approve", post(pages::apps::approve))
        .route("/apps/{app_id}/reject", post(pages::apps::reject))
        .route("/connections", get(pages::connections::list))
        .route("/connections/{connection_id}", get(pages::connection::show))
        .route(
            "/connections/{connection_id}/revoke",
            post(pages::connections::revoke),
        )
        .route(
            "/reviews",
            get(pages::reviews::start).post(pages::reviews::generate),
        )
        .route("/reviews/{review_id}", get(pages::reviews::show))
        .route(
            "/reviews/{review_id}/items/{connection_id}",
            post(pages::reviews::attest),
        )
        .route(
            "/reviews/{review_id}/export.csv",
            get(pages::reviews::export_csv),
        )
        .route(
            "/offboarding",
            get(pages::offboarding::show).post(pages::offboarding::start),
        )
        .route("/suggestions", get(pages::suggestions::list))
        .route(
            "/suggestions/{suggestion_id}/approve",
            post(pages::suggestions::approve),
        )
        .route(
            "/suggestions/{suggestion_id}/reject",
            post(pages::suggestions::reject),
        )
        .route("/imports", get(pages::imports::list))
        .route("/records", get(pages::records::browse))
        .route("/audit", get(pages::audit::search))
        .route("/audit/tail", get(pages::audit::tail))
        .route("/static/dashboard.css", get(pages::stylesheet))
        .route("/static/tail.js", get(pages::script))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(security::same_origin))
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}

/// Serves the dashboard on `listener` until `shutdown`.
pub async fn run(
    config: DashboardConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = Arc::new(Dashboard {
        tenants: config.tenants.clone(),
        people: People::new(&config.people, &config.sessions)?,
        sessions: Sessions::new(&config.sessions),
        backends: Backends::new(&config.backends)?,
        verifications: verifications::Verifications::default(),
        oidc: config.oidc.clone().map(oidc::Provider::new).transpose()?,
    });
    tracing::info!(address = %listener.local_addr()?, people = config.people.len(), "dashboard listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
