//! What a lease needs of a connection, remembered between leases: the decrypted access
//! token, the grant, where the token may be sent, and the `token_version` all of it was
//! read at. A lease served from here reads nothing from the database and decrypts nothing.
//!
//! An entry is only ever trusted together with the database: every change to a
//! connection's tokens, grant or status bumps its `token_version` (`store::connections`),
//! and the statement that records a lease's usage, which every lease commits before its
//! token leaves, writes it only while the row is still active at the version the entry
//! was read at (`store::lease_usage::add_if_current`). A connection revoked, disconnected,
//! reconnected or refreshed since, by this replica, another one or directly in the
//! database, is not leased from its entry: the lease forgets the entry and reads the row
//! again, as a lease without an entry does.
//!
//! Entries hold a secret: `Debug` shows none of it, an entry whose token has expired is
//! dropped when it is next looked at or when room is needed, and the number of entries is
//! bounded.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use proto::common::v1 as common;
use scope_catalog::{Scope, ScopeSet};
use secrecy::SecretString;

use crate::connections::Connection;
use crate::domain::ConnectionId;
use crate::refresh::Fresh;
use crate::wire_region;

/// Connections remembered at most; beyond this (once expired entries are gone) leases of
/// other connections read their row each time, as without a cache.
const MAX_ENTRIES: usize = 10_000;

/// A connection as a lease needs it, read at `token_version`.
pub struct Leasable {
    pub connection: ConnectionId,
    pub token_version: i64,
    pub granted: ScopeSet,
    /// `granted` as a lease answer carries it.
    pub granted_wire: Vec<common::Scope>,
    pub region: common::Region,
    pub api_base_url: String,
    pub clio_account_id: String,
    pub app_client_id: String,
    pub access_token: SecretString,
    pub access_expires_at: DateTime<Utc>,
    pub token_lifetime_secs: Option<i64>,
}

impl Leasable {
    /// `connection` as read, with its usable token.
    pub fn new(connection: &Connection, fresh: Fresh, api_base_url: String) -> Leasable {
        Leasable {
            connection: connection.id,
            token_version: fresh.token_version,
            granted: connection.granted.clone(),
            granted_wire: connection.granted.to_wire(),
            region: wire_region::to_wire(connection.region),
            api_base_url,
            clio_account_id: connection.clio_account_id.clone(),
            app_client_id: connection.app_client_id.clone(),
            access_token: fresh.access_token,
            access_expires_at: fresh.expires_at,
            token_lifetime_secs: connection.token_lifetime_secs,
        }
    }

    /// Whether a lease of `required` may be served from this entry at `now`: the grant
    /// covers it and the token lives past `live_until`. (Whether the connection is still
    /// current is for the usage write to tell.)
    pub fn serves(&self, required: &[Scope], live_until: DateTime<Utc>) -> bool {
        self.granted.first_missing(required).is_none() && self.access_expires_at > live_until
    }
}

impl fmt::Debug for Leasable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leasable")
            .field("connection", &self.connection)
            .field("token_version", &self.token_version)
            .field("access_expires_at", &self.access_expires_at)
            .finish_non_exhaustive()
    }
}

/// The remembered connections of this process, by id (one entry each: the latest read).
#[derive(Clone, Default)]
pub struct LeaseCache {
    entries: Arc<RwLock<HashMap<ConnectionId, Arc<Leasable>>>>,
}

impl LeaseCache {
    /// The entry of `id`, unless there is none or its token has expired by `now`.
    pub fn get(&self, id: ConnectionId, now: DateTime<Utc>) -> Option<Arc<Leasable>> {
        let entry = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()?;
        if entry.access_expires_at <= now {
            self.forget(&entry);
            return None;
        }
        Some(entry)
    }

    /// Remembers `entry` in place of an older read of its connection (a newer one stays).
    pub fn keep(&self, entry: Arc<Leasable>, now: DateTime<Utc>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = entries.get(&entry.connection) {
            if held.token_version > entry.token_version {
                return;
            }
        } else if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, held| held.access_expires_at > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(entry.connection, entry);
    }

    /// Drops `entry` (found stale or expired), unless a newer read replaced it meanwhile.
    pub fn forget(&self, entry: &Leasable) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries
            .get(&entry.connection)
            .is_some_and(|held| held.token_version <= entry.token_version)
        {
            entries.remove(&entry.connection);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use secrecy::ExposeSecret;
    use uuid::Uuid;

    use super::*;

    fn entry(id: ConnectionId, version: i64, expires_at: DateTime<Utc>) -> Arc<Leasable> {
        Arc::new(Leasable {
            connection: id,
            token_version: version,
            granted: ScopeSet::new(["contacts:read".parse().unwrap()]),
            granted_wire: Vec::new(),
            region: common::Region::Us,
            api_base_url: "https://app.clio.com/api/v4".into(),
            clio_account_id: "1".into(),
            app_client_id: "client-1".into(),
            access_token: SecretString::from(format!("token-v{version}")),
            access_expires_at: expires_at,
            token_lifetime_secs: Some(3_600),
        })
    }

    #[test]
    fn keeps_the_newest_read_and_forgets_only_what_it_was_told() {
        let cache = LeaseCache::default();
        let now = Utc::now();
        let id = ConnectionId(Uuid::now_v7());
        let later = now + Duration::hours(1);
        cache.keep(entry(id, 2, later), now);
        // An older read arriving late does not replace the newer one.
        cache.keep(entry(id, 1, later), now);
        let held = cache.get(id, now).unwrap();
        assert_eq!(held.token_version, 2);
        assert_eq!(held.access_token.expose_secret(), "token-v2");
        // Forgetting an older version leaves the newer entry; forgetting it drops it.
        cache.forget(&entry(id, 1, later));
        assert!(cache.get(id, now).is_some());
        cache.forget(&held);
        assert!(cache.get(id, now).is_none());
    }

    #[test]
    fn an_expired_token_is_not_served_and_is_dropped() {
        let cache = LeaseCache::default();
        let now = Utc::now();
        let id = ConnectionId(Uuid::now_v7());
        cache.keep(entry(id, 1, now + Duration::seconds(10)), now);
        assert!(cache.get(id, now + Duration::seconds(10)).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn serves_only_the_grant_and_a_token_with_life_left() {
        let now = Utc::now();
        let held = entry(ConnectionId(Uuid::now_v7()), 1, now + Duration::minutes(5));
        let read: Scope = "contacts:read".parse().unwrap();
        let write: Scope = "contacts:write".parse().unwrap();
        assert!(held.serves(&[read], now + Duration::minutes(1)));
        assert!(!held.serves(&[read, write], now + Duration::minutes(1)));
        assert!(!held.serves(&[read], now + Duration::minutes(5)));
    }

    #[test]
    fn debug_shows_no_token() {
        let held = entry(ConnectionId(Uuid::now_v7()), 7, Utc::now());
        let shown = format!("{held:?}");
        assert!(!shown.contains("token-v7"), "{shown}");
        assert!(shown.contains("token_version: 7"), "{shown}");
    }

    #[test]
    fn room_is_made_by_dropping_expired_entries_only() {
        let cache = LeaseCache::default();
        let now = Utc::now();
        for i in 0..MAX_ENTRIES {
            let expiry = if i % 2 == 0 {
                now - Duration::seconds(1)
            } else {
                now + Duration::hours(1)
            };
            cache.keep(entry(ConnectionId(Uuid::now_v7()), 1, expiry), now);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        cache.keep(
            entry(ConnectionId(Uuid::now_v7()), 1, now + Duration::hours(1)),
            now,
        );
        assert_eq!(cache.len(), MAX_ENTRIES / 2 + 1);
    }
}
