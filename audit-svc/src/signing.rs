//! The Ed25519 key that signs checkpoints, and the public keys checkpoints are checked
//! against.
//!
//! A key's id is the first 16 hex digits of SHA-256 of its public key, so it is derived,
//! never configured wrongly, and an export can name the key each checkpoint used.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use secrecy::{ExposeSecret, SecretString};
use service_runtime::config::ConfigError;
use sha2::{Digest, Sha256};

use crate::config::SigningConfig;

/// The id of a public key.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// The service's signing key. Never printed.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The configured key; `Ok(None)` when none is configured.
    pub fn from_config(config: &SigningConfig) -> Result<Option<Signer>, ConfigError> {
        let text = match (&config.key, &config.key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "signing.key",
                    "set signing.key or signing.key_file, not both",
                ));
            }
            (Some(key), None) => key.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        "signing.key_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                SecretString::from(text)
            }
            (None, None) => return Ok(None),
        };
        let field = if config.key.is_some() {
            "signing.key"
        } else {
            "signing.key_file"
        };
        let seed = decode_32(text.expose_secret().trim()).ok_or_else(|| {
            // Never echo the value: it is the secret.
            ConfigError::invalid(field, "must be 32 bytes as base64 or 64 hex digits")
        })?;
        Ok(Some(Signer::from_seed(&seed)))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    /// A key that lives as long as the process (only when none is configured).
    pub fn ephemeral() -> Signer {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// base64 of the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.key.sign(message).to_bytes())
    }
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        STANDARD.decode(text).ok()?
    };
    bytes.try_into().ok()
}

/// Why a checkpoint signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    #[error("signature is not 64 bytes of base64")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Public keys checkpoints may be signed with, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<(String, VerifyingKey)>);

impl TrustedKeys {
    /// Parses base64 public keys (config `signing.trusted_public_keys`).
    pub fn parse(keys: &[String]) -> Result<TrustedKeys, ConfigError> {
        let mut trusted = TrustedKeys::default();
        for (i, text) in keys.iter().enumerate() {
            let key = public_key_from_base64(text).ok_or_else(|| {
                ConfigError::invalid(
                    format!("signing.trusted_public_keys[{i}]"),
                    "not a base64 Ed25519 public key",
                )
            })?;
            trusted.add(key);
        }
        Ok(trusted)
    }

    pub fn add(&mut self, key: VerifyingKey) {
        let id = key_id(&key);
        if !self.0.iter().any(|(known, _)| *known == id) {
            self.0.push((id, key));
        }
    }

    /// `(key_id, base64 public key)` of every trusted key.
    pub fn listed(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(id, key)| (id.clone(), STANDARD.encode(key.as_bytes())))
            .collect()
    }

    pub fn verify(
        &self,
        key_id: &str,
        message: &[u8],
        signature: &str,
    ) -> Result<(), SignatureProblem> {
        let (_, key) = self
            .0
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| SignatureProblem::UnknownKey(key_id.to_owned()))?;
        let bytes: [u8; 64] = STANDARD
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureProblem::Malformed)?;
        key.verify(message, &Signature::from_bytes(&bytes))
            .map_err(|_| SignatureProblem::Mismatch)
    }
}

pub fn public_key_from_base64(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = STANDARD.decode(text.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_key_and_message() {
        let signer = Signer::from_seed(&[7; 32]);
        let mut trusted = TrustedKeys::default();
        trusted.add(signer.public_key());
        let signature = signer.sign(b"message");
        assert_eq!(
            trusted.verify(signer.key_id(), b"message", &signature),
            Ok(())
        );
        assert_eq!(
            trusted.verify(signer.key_id(), b"other", &signature),
            Err(SignatureProblem::Mismatch)
        );
        assert!(matches!(
            trusted.verify("nope", b"message", &signature),
            Err(SignatureProblem::UnknownKey(_))
        ));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_bad_ones_name_the_field() {
        let hex_key = SigningConfig {
            key: Some(SecretString::from("07".repeat(32))),
            ..SigningConfig::default()
        };
        let b64_key = SigningConfig {
            key: Some(SecretString::from(STANDARD.encode([7u8; 32]))),
            ..SigningConfig::default()
        };
        let a = Signer::from_config(&hex_key).unwrap().unwrap();
        let b = Signer::from_config(&b64_key).unwrap().unwrap();
        assert_eq!(a.key_id(), b.key_id());

        let bad = SigningConfig {
            key: Some(SecretString::from("secret-but-short")),
            ..SigningConfig::default()
        };
        let error = Signer::from_config(&bad).unwrap_err().to_string();
        assert!(error.contains("signing.key"), "{error}");
        assert!(!error.contains("secret-but-short"), "{error}");
    }
}
