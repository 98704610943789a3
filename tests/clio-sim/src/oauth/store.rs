//! One region's authorization codes, grants and tokens.
//!
//! A grant is what a user's approval of an app creates; every access and refresh token
//! belongs to one grant, so revoking the grant (deauthorize, admin revoke, fault) rejects
//! all of them at once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::clock::after;

/// Tokens handed out by a successful code exchange or refresh.
#[derive(Debug)]
pub(crate) struct Issued {
    /// The grant the tokens belong to (its index in the region).
    pub(crate) grant: usize,
    pub(crate) access_token: String,
    /// Present on code exchange, and on refresh when rotation is on.
    pub(crate) refresh_token: Option<String>,
}

/// The grant behind a valid access token.
#[derive(Clone, Debug)]
pub(crate) struct Bearer {
    pub(crate) grant: usize,
    pub(crate) client_id: String,
    /// The account (1-based) whose user approved, whose records the token reads.
    pub(crate) account: u32,
    pub(crate) user_key: i64,
}

#[derive(Debug)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    account: u32,
    user_key: i64,
    expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Grant {
    client_id: String,
    account: u32,
    user_key: i64,
    revoked: bool,
}

#[derive(Debug)]
struct AccessToken {
    grant: usize,
    expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct RefreshToken {
    grant: usize,
    client_id: String,
    active: bool,
}

#[derive(Debug, Default)]
struct Inner {
    codes: HashMap<String, PendingCode>,
    grants: Vec<Grant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
}

#[derive(Debug, Default)]
pub(crate) struct OAuthStore {
    inner: Mutex<Inner>,
}

/// An unguessable token or code.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl OAuthStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an approval by `user_key` of `account` and returns its code.
    pub(crate) fn issue_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        account: u32,
        user_key: i64,
        expires_at: DateTime<Utc>,
    ) -> String {
        let code = random_token();
        self.lock().codes.insert(
            code.clone(),
            PendingCode {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                account,
                user_key,
                expires_at,
            },
        );
        code
    }

    /// Exchanges a code (single use) for a new grant's tokens. The error is the
    /// `invalid_grant` description.
    pub(crate) fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        now: DateTime<Utc>,
        access_ttl: Duration,
    ) -> Result<Issued, &'static str> {
        let mut inner = self.lock();
        // Removed on first presentation, whatever the outcome: a code is never good twice.
        let pending = inner
            .codes
            .remove(code)
            .ok_or("the authorization code is invalid or has already been used")?;
        if pending.client_id != client_id {
            return Err("the authorization code was issued to another client");
        }
        if now >= pending.expires_at {
            return Err("the authorization code has expired");
        }
        if pending.redirect_uri != redirect_uri {
            return Err("redirect_uri does not match the one used to authorize");
        }
        inner.grants.push(Grant {
            client_id: client_id.to_owned(),
            account: pending.account,
            user_key: pending.user_key,
            revoked: false,
        });
        let grant = inner.grants.len() - 1;
        let access_token = Self::new_access(&mut inner, grant, now, access_ttl);
        let refresh_token = Self::new_refresh(&mut inner, grant, client_id);
        Ok(Issued {
            grant,
            access_token,
            refresh_token: Some(refresh_token),
        })
    }

    /// A new access token for the refresh token's grant; with `rotate`, a new refresh
    /// token too, and the presented one stops working.
    pub(crate) fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        now: DateTime<Utc>,
        access_ttl: Duration,
        rotate: bool,
    ) -> Result<Issued, &'static str> {
        let mut inner = self.lock();
        let invalid = "the refresh token is invalid, revoked or was issued to another client";
        let grant = match inner.refresh.get(refresh_token) {
            Some(token) if token.active && token.client_id == client_id => token.grant,
            _ => return Err(invalid),
        };
        if inner.grants.get(grant).is_none_or(|g| g.revoked) {
            return Err(invalid);
        }
        let access_token = Self::new_access(&mut inner, grant, now, access_ttl);
        let refresh_token = rotate.then(|| {
            if let Some(old) = inner.refresh.get_mut(refresh_token) {
                old.active = false;
            }
            Self::new_refresh(&mut inner, grant, client_id)
        });
        Ok(Issued {
            grant,
            access_token,
            refresh_token,
        })
    }

    fn new_access(inner: &mut Inner, grant: usize, now: DateTime<Utc>, ttl: Duration) -> String {
        let token = random_token();
        let expires_at = after(now, ttl);
        inner
            .access
            .insert(token.clone(), AccessToken { grant, expires_at });
        token
    }

    fn new_refresh(inner: &mut Inner, grant: usize, client_id: &str) -> String {
        let token = random_token();
        inner.refresh.insert(
            token.clone(),
            RefreshToken {
                grant,
                client_id: client_id.to_owned(),
                active: true,
            },
        );
        token
    }

    /// The grant of a live access token; the error is the `invalid_token` description.
    pub(crate) fn authenticate(
        &self,
        access_token: &str,
        now: DateTime<Utc>,
    ) -> Result<Bearer, &'static str> {
        let inner = self.lock();
        let token = inner
            .access
            .get(access_token)
            .ok_or("the access token is invalid")?;
        let grant = inner
            .grants
            .get(token.grant)
            .ok_or("the access token is invalid")?;
        if grant.revoked {
            return Err("the access token has been revoked");
        }
        if now >= token.expires_at {
            return Err("the access token has expired");
        }
        Ok(Bearer {
            grant: token.grant,
            client_id: grant.client_id.clone(),
            account: grant.account,
            user_key: grant.user_key,
        })
    }

    /// Whether a user of `account` has a grant to the app that is not revoked (their
    /// webhooks deliver only while they do).
    pub(crate) fn has_live_grant(&self, client_id: &str, account: u32, user_key: i64) -> bool {
        self.lock().grants.iter().any(|g| {
            !g.revoked && g.client_id == client_id && g.account == account && g.user_key == user_key
        })
    }

    /// Revokes one grant; false if it was already revoked.
    pub(crate) fn revoke_grant(&self, grant: usize) -> bool {
        let mut inner = self.lock();
        match inner.grants.get_mut(grant) {
            Some(grant) if !grant.revoked => {
                grant.revoked = true;
                true
            }
            _ => false,
        }
    }

    /// Revokes every live grant a user of `account` gave an app; returns how many.
    pub(crate) fn revoke_grants_of(&self, client_id: &str, account: u32, user_key: i64) -> usize {
        let mut inner = self.lock();
        inner
            .grants
            .iter_mut()
            .filter(|g| {
                !g.revoked
                    && g.client_id == client_id
                    && g.account == account
                    && g.user_key == user_key
            })
            .map(|g| g.revoked = true)
            .count()
    }

    /// Revokes the grant behind an access token (expired or not); returns 1 or 0.
    pub(crate) fn revoke_by_access_token(&self, access_token: &str) -> usize {
        let grant = self.lock().access.get(access_token).map(|t| t.grant);
        grant.map_or(0, |grant| usize::from(self.revoke_grant(grant)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_code_is_single_use_and_bound_to_its_redirect() {
        let store = OAuthStore::default();
        let now = Utc::now();
        let ttl = Duration::from_secs(60);
        let later = after(now, Duration::from_secs(600));
        let code = store.issue_code("cid", "https://a/cb", 1, 7, later);
        assert!(
            store
                .exchange_code("cid", &code, "https://a/cb/", now, ttl)
                .is_err()
        );
        let code = store.issue_code("cid", "https://a/cb", 1, 7, later);
        let issued = store
            .exchange_code("cid", &code, "https://a/cb", now, ttl)
            .unwrap();
        assert!(
            store
                .exchange_code("cid", &code, "https://a/cb", now, ttl)
                .is_err()
        );
        assert_eq!(
            store
                .authenticate(&issued.access_token, now)
                .unwrap()
                .user_key,
            7
        );
    }
}
