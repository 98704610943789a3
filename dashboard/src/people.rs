//! The people who may sign in: their password check (argon2id), their roles, and the
//! service credential the dashboard presents for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use service_runtime::Role;
use service_runtime::caller_auth::BearerToken;
use service_runtime::config::ConfigError;

use crate::config::{PersonConfig, SessionConfig};

/// A person, as signed in.
pub struct Person {
    pub name: String,
    pub roles: Vec<Role>,
    /// None: signs in through the identity provider only.
    password_hash: Option<String>,
    /// `authorization: Bearer <their credential>`, marked sensitive.
    pub bearer: BearerToken,
}

impl Person {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Why a sign-in was refused. Deliberately the same answer for an unknown name and a
/// wrong password.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    WrongNameOrPassword,
    /// Too many failures for this name lately.
    LockedOut,
}

pub struct People {
    by_name: HashMap<String, Arc<Person>>,
    /// Checked for names nobody has, so an unknown name costs as long as a wrong password.
    decoy_hash: String,
    failures: Mutex<HashMap<String, Failures>>,
    max_failures: u32,
    lockout: Duration,
}

struct Failures {
    count: u32,
    since: Instant,
}

impl People {
    pub fn new(people: &[PersonConfig], sessions: &SessionConfig) -> Result<People, ConfigError> {
        let mut by_name = HashMap::new();
        for person in people {
            let bearer = BearerToken::new(&person.credential).map_err(|e| e.within("people"))?;
            by_name.insert(
                person.name.clone(),
                Arc::new(Person {
                    name: person.name.clone(),
                    roles: person.roles.clone(),
                    password_hash: person.password_hash.clone(),
                    bearer,
                }),
            );
        }
        let decoy = SecretString::from(random_token());
        Ok(People {
            by_name,
            decoy_hash: hash_password(&decoy)
                .map_err(|e| ConfigError::invalid("people", e.to_string()))?,
            failures: Mutex::new(HashMap::new()),
            max_failures: sessions.max_failed_sign_ins,
            lockout: Duration::from_secs(sessions.lockout_minutes.saturating_mul(60)),
        })
    }

    /// Checks a name and password. The hash is computed off the async threads (it takes
    /// tens of milliseconds by design).
    pub async fn sign_in(
        &self,
        name: &str,
        password: SecretString,
    ) -> Result<Arc<Person>, Refusal> {
        if self.locked_out(name) {
            return Err(Refusal::LockedOut);
        }
        let person = self.by_name.get(name).cloned();
        // A person without a password is checked against the decoy too: the answer is the
        // same "no" at the same cost.
        let hash = person
            .as_ref()
            .and_then(|p| p.password_hash.clone())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let has_password = person.as_ref().is_some_and(|p| p.password_hash.is_some());
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        match person {
            Some(person) if matches && has_password => {
                self.lock().remove(name);
                Ok(person)
            }
            _ => {
                self.count_failure(name);
                Err(Refusal::WrongNameOrPassword)
            }
        }
    }

    /// The person the identity provider vouched for, if the configuration has them.
    pub fn by_name(&self, name: &str) -> Option<Arc<Person>> {
        self.by_name.get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn locked_out(&self, name: &str) -> bool {
        let mut failures = self.lock();
        match failures.get(name) {
            Some(f) if f.since.elapsed() >= self.lockout => {
                failures.remove(name);
                false
            }
            Some(f) => f.count >= self.max_failures,
            None => false,
        }
    }

    fn count_failure(&self, name: &str) {
        let mut failures = self.lock();
        // Names nobody has are counted too (an attacker guessing names is throttled the
        // same), but the map is bounded: past 10,000 names the oldest entries go.
        if failures.len() >= 10_000 {
            let lockout = self.lockout;
            failures.retain(|_, f| f.since.elapsed() < lockout);
        }
        let entry = failures.entry(name.to_owned()).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        entry.count = entry.count.saturating_add(1);
    }
}

fn verify_password(hash: &str, password: &SecretString) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id PHC string for `password` (`dashboard hash-password`).
pub fn hash_password(password: &SecretString) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)?
        .to_string())
}

/// 32 random bytes, URL-safe base64: session ids and CSRF tokens.
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn people(max_failures: u32) -> People {
        let config = PersonConfig {
            name: "carol@firm.example".into(),
            password_hash: Some(hash_password(&SecretString::from("correct horse")).unwrap()),
            roles: vec![Role::Compliance],
            credential: SecretString::from("credential-of-carol"),
        };
        let sessions = SessionConfig {
            max_failed_sign_ins: max_failures,
            ..SessionConfig::default()
        };
        People::new(&[config], &sessions).unwrap()
    }

    #[tokio::test]
    async fn the_right_password_signs_in_and_nothing_else_does() {
        let people = people(5);
        let carol = people
            .sign_in("carol@firm.example", SecretString::from("correct horse"))
            .await
            .unwrap();
        assert_eq!(carol.name, "carol@firm.example");
        for (name, password) in [
            ("carol@firm.example", "Correct horse"),
            ("carol@firm.example", ""),
            ("mallory@firm.example", "correct horse"),
        ] {
            assert_eq!(
                people
                    .sign_in(name, SecretString::from(password))
                    .await
                    .unwrap_err(),
                Refusal::WrongNameOrPassword,
                "{name} / {password:?}"
            );
        }
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_name_out_even_for_the_right_password() {
        let people = people(3);
        for _ in 0..3 {
            let refused = people
                .sign_in("carol@firm.example", SecretString::from("guess"))
                .await;
            assert_eq!(refused.unwrap_err(), Refusal::WrongNameOrPassword);
        }
        let refused = people
            .sign_in("carol@firm.example", SecretString::from("correct horse"))
            .await;
        assert_eq!(refused.unwrap_err(), Refusal::LockedOut);
    }

    #[test]
    fn debug_output_never_shows_the_credential_or_the_hash() {
        let people = people(5);
        let carol = people.by_name.get("carol@firm.example").unwrap();
        let shown = format!("{carol:?}");
        assert!(!shown.contains("credential-of-carol"), "{shown}");
        assert!(!shown.contains("argon2"), "{shown}");
    }
}
