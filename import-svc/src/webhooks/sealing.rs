//! Clio's shared secrets at rest: sealed with AES-256-GCM under `webhooks.secret_key`,
//! with the subscription's id as associated data, so a sealed secret copied onto another
//! row does not open. Stored as nonce (12 bytes) followed by ciphertext and tag.

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::SecretString;
use uuid::Uuid;

pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([REDACTED])")
    }
}

impl Sealer {
    /// The key from its base64 text (32 bytes); the problem, naming no key material.
    pub fn from_base64(text: &str) -> Result<Sealer, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "is not base64".to_owned())?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| format!("must be 32 bytes (base64), not {}", bytes.len()))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    pub fn seal(&self, subscription_id: Uuid, secret: &str) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_owned())?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(subscription_id.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "sealing failed".to_owned())?;
        let mut stored = nonce.to_vec();
        stored.extend(sealed);
        Ok(stored)
    }

    pub fn open(&self, subscription_id: Uuid, stored: &[u8]) -> Result<SecretString, String> {
        if stored.len() < NONCE_LEN {
            return Err("sealed secret too short".into());
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
        let mut buffer = sealed.to_vec();
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(subscription_id.as_bytes()), &mut buffer)
            .map_err(|_| "the sealed secret does not open with this key".to_owned())?;
        String::from_utf8(opened.to_vec())
            .map(SecretString::from)
            .map_err(|_| "the opened secret is not text".into())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_subscription() {
        let sealer = sealer();
        let (one, other) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = sealer.seal(one, "hook-secret").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"hook-secret"));
        assert_eq!(
            sealer.open(one, &sealed).unwrap().expose_secret(),
            "hook-secret"
        );
        assert!(sealer.open(other, &sealed).is_err());
    }

    #[test]
    fn a_wrong_key_is_refused_without_showing_it() {
        let error = Sealer::from_base64("c2hvcnQ=").unwrap_err();
        assert!(
            error.contains("32 bytes") && !error.contains("short"),
            "{error}"
        );
        assert!(Sealer::from_base64("not base64!").is_err());
    }
}
