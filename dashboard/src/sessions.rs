//! Signed-in sessions, held in the dashboard's memory: the cookie carries only a random
//! id, the store keeps who it is and the session's CSRF token. A restart signs everyone
//! out, which for an internal compliance tool is the right trade against a session
//! database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::COOKIE;
use sha2::{Digest, Sha256};

use crate::config::SessionConfig;
use crate::people::{Person, random_token};

/// A signed-in person as a request sees them.
#[derive(Clone)]
pub struct Session {
    pub person: Arc<Person>,
    /// Every form of the session carries it; every POST must send it back.
    pub csrf: String,
}

struct Stored {
    session: Session,
    started: Instant,
    last_seen: Instant,
}

pub struct Sessions {
    /// By the SHA-256 of the cookie's id: the store alone cannot be replayed as cookies.
    by_id: Mutex<HashMap<[u8; 32], Stored>>,
    idle: Duration,
    absolute: Duration,
    secure: bool,
}

impl Sessions {
    pub fn new(config: &SessionConfig) -> Sessions {
        Sessions {
            by_id: Mutex::new(HashMap::new()),
            idle: Duration::from_secs(config.idle_minutes.saturating_mul(60)),
            absolute: Duration::from_secs(config.absolute_hours.saturating_mul(3600)),
            secure: config.secure_cookie,
        }
    }

    /// The cookie's name: `__Host-` binds it to this host and path `/` when it is `Secure`.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-clio_dashboard"
        } else {
            "clio_dashboard"
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Stored>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `person`; returns the `Set-Cookie` value.
    pub fn start(&self, person: Arc<Person>) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| self.alive(s, now));
        sessions.insert(
            digest(&id),
            Stored {
                session: Session {
                    person,
                    csrf: random_token(),
                },
                started: now,
                last_seen: now,
            },
        );
        self.set_cookie(&id, self.absolute)
    }

    /// The session the request's cookie names, if it is still alive.
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, self.cookie_name())?;
        let key = digest(&id);
        let now = Instant::now();
        let mut sessions = self.lock();
        let stored = sessions.get_mut(&key)?;
        if !self.alive(stored, now) {
            sessions.remove(&key);
            return None;
        }
        stored.last_seen = now;
        Some(stored.session.clone())
    }

    /// Ends the request's session; returns the `Set-Cookie` value that clears the cookie.
    pub fn end(&self, headers: &HeaderMap) -> String {
        if let Some(id) = cookie(headers, self.cookie_name()) {
            self.lock().remove(&digest(&id));
        }
        self.set_cookie("", Duration::ZERO)
    }

    fn alive(&self, stored: &Stored, now: Instant) -> bool {
        now.duration_since(stored.last_seen) < self.idle
            && now.duration_since(stored.started) < self.absolute
    }

    fn set_cookie(&self, value: &str, max_age: Duration) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.cookie_name(),
            max_age.as_secs()
        )
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The value of cookie `name` in the request, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
