//! Password hashing with argon2id, off the async runtime.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use crate::ApiError;

/// Hashes a password (argon2id, the crate's recommended parameters) on a
/// blocking thread: a hash takes tens of milliseconds of CPU.
pub(crate) async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|_| ApiError::unavailable("Could not process the password; try again."))?
}

fn hash_now(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|_| ApiError::unavailable("Could not hash the password."))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ApiError::unavailable("Could not hash the password."))
}

/// Whether `password` matches `stored`. With no stored hash (unknown user,
/// or an account without a password) it still spends the time of a real
/// check, so response times do not reveal which usernames exist.
pub(crate) async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let decoy = dummy_hash();
        let (target, real) = match stored.as_deref() {
            Some(h) => (h, true),
            None => (decoy, false),
        };
        let matches = PasswordHash::new(target)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        real && matches
    })
    .await
    .unwrap_or(false)
}

/// A hash of nothing anyone knows, computed once per process.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_now("roomcast timing decoy").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse".into(), Some(h)).await);
        assert!(!verify("roomcast timing decoy".into(), None).await);
        assert!(!verify("x".into(), Some("not a phc string".into())).await);
    }
}
