//! The shared secret of a subscription and the `X-Hook-Signature` it makes: the
//! HMAC-SHA256 of the raw body keyed with the secret, in lowercase hex.

use std::fmt;

use rand::RngCore;
use ring::hmac;

/// A subscription's shared secret. Its `Debug` never shows the value, so no log or debug
/// dump of a subscription carries it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SharedSecret(String);

impl SharedSecret {
    /// A fresh, unguessable secret: 32 random bytes in hex (Clio does not document its
    /// format; this is ours).
    pub(crate) fn generate() -> SharedSecret {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        SharedSecret(hex::encode(bytes))
    }

    /// The value as sent in `X-Hook-Secret`.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` (an `X-Hook-Secret` echoed or sent to activate) is this secret.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        // Constant time: compare MACs of both under a throwaway key.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"compare");
        let tag = hmac::sign(&key, self.0.as_bytes());
        hmac::verify(&key, presented, tag.as_ref()).is_ok()
    }

    /// `X-Hook-Signature` of `body`.
    pub(crate) fn sign(&self, body: &[u8]) -> String {
        sign_with(self.0.as_bytes(), body)
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// Lowercase hex HMAC-SHA256 of `body` under `key`.
pub(crate) fn sign_with(key: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hex::encode(hmac::sign(&key, body).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign_with(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_secret_is_never_in_debug_output_and_compares_exactly() {
        let secret = SharedSecret::generate();
        assert_eq!(secret.expose().len(), 64);
        assert!(!format!("{secret:?}").contains(secret.expose()));
        assert!(secret.matches(secret.expose().as_bytes()));
        assert!(!secret.matches(b"nope"));
        assert!(!secret.matches(&secret.expose().as_bytes()[1..]));
    }
}
