//! Service keys at the door: made here for `roomcast keys create` (which
//! stores the hash and prints the key once), and recognised here when a
//! request presents one as `Authorization: Bearer rk_...`.
//!
//! Why a key is looked up on every request rather than cached: revoking
//! one must shut its program out at once, on every node, and one indexed
//! read of a small table is cheap next to the write a key's request makes.
//! Why SHA-256 and not argon2: see `roomcast_storage::ServiceKeyRepository`'s
//! module (a key is 32 random bytes, not a password).

use base64::Engine;
use rand::RngCore;
use roomcast_storage::ServiceKey;
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// What every service key starts with, so a server (and a secret scanner)
/// tells one from a JWT at a glance.
pub const SERVICE_KEY_PREFIX: &str = "rk_";

/// A freshly made key: the secret to hand out once, and the hash to store.
pub struct GeneratedKey {
    key: String,
    hash: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("hash", &self.hash)
            .finish_non_exhaustive() // never print the key
    }
}

impl GeneratedKey {
    /// `rk_` and 32 random bytes in URL-safe base64.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let key = format!(
            "{SERVICE_KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let hash = secret_hash(&key);
        Self { key, hash }
    }

    /// The key, to show its owner once: it is not stored anywhere.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What storage keeps (`NewServiceKey::key_hash`).
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// SHA-256 of a random secret (a service key, a refresh token), lowercase
/// hex: what storage keeps instead of the secret.
pub(crate) fn secret_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a bearer token is a service key (not a JWT).
pub(crate) fn is_service_key(token: &str) -> bool {
    token.starts_with(SERVICE_KEY_PREFIX)
}

/// The live key `token` is; 401 for an unknown or revoked one.
pub(crate) async fn live_key(app: &AppState, token: &str) -> Result<ServiceKey, ApiError> {
    app.storage()
        .live_service_key(&secret_hash(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("Unknown or revoked service key."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_stored_as_sha256_hex() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = GeneratedKey::generate();
        let b = GeneratedKey::generate();
        assert!(is_service_key(a.key()));
        assert_eq!(a.key().len(), SERVICE_KEY_PREFIX.len() + 43, "32 bytes");
        assert_ne!(a.key(), b.key());
        assert_eq!(a.hash(), secret_hash(a.key()));
        assert!(!format!("{a:?}").contains(a.key()), "Debug hides the key");
    }
}
