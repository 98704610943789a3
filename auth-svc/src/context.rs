//! What every operation of the service works with: the database, the vault, the Clio
//! client, the clock, the configuration, the outbox relay, the lease-usage recorder, the
//! lease cache and the metrics.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clio_api::ClioClient;
use service_runtime::clock::SharedClock;
use sqlx::PgPool;

use crate::config::Config;
use crate::key_rotation::RotationMetrics;
use crate::lease_cache::LeaseCache;
use crate::metrics::AuthMetrics;
use crate::refresh::RefreshFlights;
use crate::token_vault::TokenVault;
use crate::usage::UsageRecorder;

#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    pub vault: Arc<TokenVault>,
    pub clio: ClioClient,
    pub clock: SharedClock,
    pub config: Arc<Config>,
    pub outbox: audit_outbox::Waker,
    pub usage: UsageRecorder,
    /// What leases read of connections, served again while still current.
    pub lease_cache: LeaseCache,
    /// Refreshes in flight in this process, one per connection.
    pub refreshes: RefreshFlights,
    pub rotation: RotationMetrics,
    /// Leases, refreshes and Clio calls in `/metrics`.
    pub metrics: AuthMetrics,
}

impl Context {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Tells the relay events were committed, so they go out now rather than at its next
    /// poll.
    pub fn events_committed(&self) {
        self.outbox.wake();
    }
}
