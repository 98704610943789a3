//! Secrets at rest: AES-256-GCM under named data keys.
//!
//! A ciphertext is `len(key id) || key id || 96-bit random nonce || ciphertext+tag`, so it
//! says which key opens it and any configured key can read it during a rotation. The
//! associated data is `<table>/<column>/<row id>`: a ciphertext copied into another row
//! or column does not decrypt. Plaintext only ever lives in memory as a `SecretString`.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("encryption key {0:?} is not configured")]
    UnknownKey(String),
    #[error("ciphertext is malformed")]
    Malformed,
    /// Wrong key, tampered bytes, or a ciphertext moved to another row.
    #[error("ciphertext does not decrypt under its key and binding")]
    Undecryptable,
    #[error("encryption failed")]
    Encrypt,
}

/// Where a ciphertext lives; it only decrypts there.
#[derive(Debug, Clone)]
pub struct Binding {
    aad: String,
}

impl Binding {
    pub fn new(table: &str, column: &str, row: impl fmt::Display) -> Binding {
        Binding {
            aad: format!("{table}/{column}/{row}"),
        }
    }
}

/// A sealed secret and the id of the key that sealed it.
#[derive(Clone)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

pub struct TokenVault {
    keys: HashMap<String, Aes256Gcm>,
    active: RwLock<String>,
}

impl fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("TokenVault")
            .field("key_ids", &ids)
            .field("active", &self.active_key_id())
            .finish()
    }
}

impl TokenVault {
    /// A vault of `keys` (id, material), sealing under `active`. The material is wiped when
    /// the vault has taken it; the ciphers wipe their key schedules when dropped.
    pub fn new(
        keys: Vec<(String, Zeroizing<[u8; 32]>)>,
        active: &str,
    ) -> Result<TokenVault, VaultError> {
        let keys: HashMap<String, Aes256Gcm> = keys
            .into_iter()
            .map(|(id, bytes)| cipher(&bytes).map(|cipher| (id, cipher)))
            .collect::<Result<_, _>>()?;
        if !keys.contains_key(active) {
            return Err(VaultError::UnknownKey(active.to_owned()));
        }
        Ok(TokenVault {
            keys,
            active: RwLock::new(active.to_owned()),
        })
    }

    /// A vault with one random key that exists only in this process: for a development
    /// config without keys. Secrets sealed with it are unreadable after a restart.
    pub fn ephemeral() -> TokenVault {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
        let id = "ephemeral".to_owned();
        let cipher = Aes256Gcm::new(GenericArray::from_slice(bytes.as_slice()));
        TokenVault {
            keys: HashMap::from([(id.clone(), cipher)]),
            active: RwLock::new(id),
        }
    }

    pub fn active_key_id(&self) -> String {
        self.active
            .read()
            .map(|id| id.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Makes `id` the key new secrets are sealed with.
    pub fn set_active(&self, id: &str) -> Result<(), VaultError> {
        if !self.has_key(id) {
            return Err(VaultError::UnknownKey(id.to_owned()));
        }
        let mut active = self
            .active
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *active = id.to_owned();
        Ok(())
    }

    /// Encrypts `secret` under the active key, bound to `binding`.
    pub fn seal(&self, secret: &SecretString, binding: &Binding) -> Result<Sealed, VaultError> {
        let key_id = self.active_key_id();
        let cipher = self
            .keys
            .get(&key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: binding.aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Encrypt)?;
        let id_len = u8::try_from(key_id.len()).map_err(|_| VaultError::Encrypt)?;
        let mut ciphertext = Vec::with_capacity(1 + key_id.len() + NONCE_LEN + sealed.len());
        ciphertext.push(id_len);
        ciphertext.extend_from_slice(key_id.as_bytes());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(Sealed { ciphertext, key_id })
    }

    /// Decrypts a ciphertext sealed for `binding` under any configured key.
    pub fn open(&self, ciphertext: &[u8], binding: &Binding) -> Result<SecretString, VaultError> {
        let (key_id, rest) = split_key_id(ciphertext)?;
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_owned()))?;
        if rest.len() < NONCE_LEN {
            return Err(VaultError::Malformed);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: binding.aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Undecryptable)?;
        // Not UTF-8: the plaintext is wiped on the way out all the same.
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|e| {
                drop(Zeroizing::new(e.into_bytes()));
                VaultError::Malformed
            })
    }

    /// Re-seals under the active key (rotation). `None` when already under it.
    pub fn reseal(
        &self,
        ciphertext: &[u8],
        binding: &Binding,
    ) -> Result<Option<Sealed>, VaultError> {
        let (key_id, _) = split_key_id(ciphertext)?;
        if key_id == self.active_key_id() {
            return Ok(None);
        }
        let secret = self.open(ciphertext, binding)?;
        self.seal(&secret, binding).map(Some)
    }
}

/// A cipher keyed from `bytes` in place (no copy of the key is left behind).
fn cipher(bytes: &[u8; 32]) -> Result<Aes256Gcm, VaultError> {
    Aes256Gcm::new_from_slice(bytes).map_err(|_| VaultError::Encrypt)
}

fn split_key_id(ciphertext: &[u8]) -> Result<(&str, &[u8]), VaultError> {
    let (&len, rest) = ciphertext.split_first().ok_or(VaultError::Malformed)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(VaultError::Malformed);
    }
    let (id, rest) = rest.split_at(len);
    let id = std::str::from_utf8(id).map_err(|_| VaultError::Malformed)?;
    Ok((id, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> TokenVault {
        TokenVault::new(
            vec![
                ("k1".into(), Zeroizing::new([1; 32])),
                ("k2".into(), Zeroizing::new([2; 32])),
            ],
            "k1",
        )
        .unwrap()
    }

    #[test]
    fn seals_and_opens_under_any_configured_key() {
        let vault = vault();
        let binding = Binding::new("connections", "access_token", "row-1");
        let sealed = vault
            .seal(&SecretString::from("tok-123"), &binding)
            .unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains("tok-123"));
        vault.set_active("k2").unwrap();
        assert_eq!(
            vault
                .open(&sealed.ciphertext, &binding)
                .unwrap()
                .expose_secret(),
            "tok-123"
        );
        let resealed = vault.reseal(&sealed.ciphertext, &binding).unwrap().unwrap();
        assert_eq!(resealed.key_id, "k2");
        assert!(
            vault
                .reseal(&resealed.ciphertext, &binding)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_tampered_does_not_open() {
        let vault = vault();
        let binding = Binding::new("connections", "access_token", "row-1");
        let sealed = vault.seal(&SecretString::from("tok"), &binding).unwrap();
        let elsewhere = Binding::new("connections", "access_token", "row-2");
        assert_eq!(
            vault.open(&sealed.ciphertext, &elsewhere).unwrap_err(),
            VaultError::Undecryptable
        );
        let other_column = Binding::new("connections", "refresh_token", "row-1");
        assert!(vault.open(&sealed.ciphertext, &other_column).is_err());
        let mut tampered = sealed.ciphertext.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(vault.open(&tampered, &binding).is_err());
        // Two seals of one secret differ (random nonce).
        let again = vault.seal(&SecretString::from("tok"), &binding).unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn unknown_keys_are_refused_and_debug_shows_no_key() {
        let vault = vault();
        assert_eq!(
            vault.set_active("k9"),
            Err(VaultError::UnknownKey("k9".into()))
        );
        let other = TokenVault::new(vec![("k3".into(), Zeroizing::new([3; 32]))], "k3").unwrap();
        let binding = Binding::new("t", "c", 1);
        let sealed = other.seal(&SecretString::from("x"), &binding).unwrap();
        assert_eq!(
            vault.open(&sealed.ciphertext, &binding).unwrap_err(),
            VaultError::UnknownKey("k3".into())
        );
        assert_eq!(
            format!("{vault:?}"),
            "TokenVault { key_ids: [\"k1\", \"k2\"], active: \"k1\" }"
        );
    }
}
