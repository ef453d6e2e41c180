//! Secrets at rest: XChaCha20-Poly1305 under a master key the operator holds.
//!
//! The key is 32 random bytes, base64, in `ROSTER_MASTER_KEY` or in the home folder's
//! `master.key` (mode 0600). Each credential's secrets are sealed with a fresh 24-byte
//! nonce and the credential's name as associated data, so a sealed blob cannot be moved
//! to another credential.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::error::{Error, Result};

pub const KEY_FILE: &str = "master.key";
pub const KEY_ENV: &str = "ROSTER_MASTER_KEY";

pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault([key redacted])")
    }
}

impl Vault {
    /// A new random key, base64.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        B64.encode(key)
    }

    /// Writes a new key file with 0600 permissions unless one exists.
    pub fn create_key_file(home: &Path) -> Result<bool> {
        let path = home.join(KEY_FILE);
        if path.exists() {
            return Ok(false);
        }
        let key = Self::generate_key();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        use std::io::Write;
        let mut file = options.open(&path)?;
        file.write_all(key.as_bytes())?;
        file.sync_all()?;
        Ok(true)
    }

    /// The vault for a home: `ROSTER_MASTER_KEY` first, then `master.key`.
    pub fn open(home: &Path) -> Result<Vault> {
        let (text, origin) = match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => (v, KEY_ENV.to_string()),
            _ => {
                let path = home.join(KEY_FILE);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::Vault(format!(
                        "cannot read the master key {}: {e}. Set {KEY_ENV} or run `roster init` to create one",
                        path.display()
                    ))
                })?;
                (text, path.display().to_string())
            }
        };
        Self::from_base64(text.trim(), &origin)
    }

    pub fn from_base64(text: &str, origin: &str) -> Result<Vault> {
        let bytes = B64.decode(text).map_err(|_| {
            Error::Vault(format!("the master key in {origin} is not base64 (expected 32 random bytes, base64)"))
        })?;
        if bytes.len() != 32 {
            return Err(Error::Vault(format!(
                "the master key in {origin} is {} bytes; it must be 32 bytes, base64",
                bytes.len()
            )));
        }
        let cipher =
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| Error::Vault("bad master key length".into()))?;
        Ok(Vault { cipher })
    }

    /// Seals `secrets` for the credential `name`.
    pub fn seal(&self, name: &str, secrets: &BTreeMap<String, String>) -> Result<String> {
        let plain = serde_json::to_vec(secrets).map_err(|e| Error::Vault(e.to_string()))?;
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad: name.as_bytes() })
            .map_err(|_| Error::Vault("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64.encode(out))
    }

    /// Opens what [`Vault::seal`] sealed for `name`.
    pub fn unseal(&self, name: &str, sealed: &str) -> Result<BTreeMap<String, String>> {
        let wrong_key = || {
            Error::Vault(format!(
                "cannot decrypt credential `{name}`: the master key is not the one it was stored with \
                 (check {KEY_ENV} or the home's {KEY_FILE}), or the stored value was tampered with"
            ))
        };
        let bytes = B64.decode(sealed).map_err(|_| wrong_key())?;
        if bytes.len() < 24 {
            return Err(wrong_key());
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: name.as_bytes() })
            .map_err(|_| wrong_key())?;
        serde_json::from_slice(&plain).map_err(|_| wrong_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_the_same_key_and_name() {
        let vault = Vault::from_base64(&Vault::generate_key(), "test").unwrap();
        let secrets = BTreeMap::from([("token".to_string(), "s3cret-token-value".to_string())]);
        let sealed = vault.seal("brex", &secrets).unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(vault.unseal("brex", &sealed).unwrap(), secrets);
        // Moved to another credential name: refused.
        assert!(vault.unseal("other", &sealed).is_err());
        // Another key: refused with a message that names no secret.
        let other = Vault::from_base64(&Vault::generate_key(), "test").unwrap();
        let err = other.unseal("brex", &sealed).unwrap_err().to_string();
        assert!(err.contains("master key"), "{err}");
        assert!(!err.contains("s3cret"));
    }

    #[test]
    fn a_short_or_garbled_key_is_a_clear_error() {
        assert!(Vault::from_base64("not base64!!", "env").unwrap_err().to_string().contains("not base64"));
        assert!(Vault::from_base64("AAAA", "env").unwrap_err().to_string().contains("32 bytes"));
    }
}
