//! Service keys: credentials for programs (a deploy bot, a monitoring
//! hook) that post into rooms as a bot user of their own, made by the
//! operator with `roomcast keys create`.
//!
//! Only a key's hash is stored, and the hash is a plain SHA-256, not a
//! password hash such as argon2: a key is 32 random bytes, so there is no
//! dictionary to slow an attacker down against, and a hash anyone can
//! compute in a microsecond lets every request with a key be checked with
//! one indexed lookup, where argon2 would cost 19 MiB and tens of
//! milliseconds a request. (Passwords are argon2 because people choose
//! them.)
//!
//! A key's bot user is an ordinary account named after the key, with no
//! password and no email, so nobody can log in as it; it authors what the
//! key posts. Revoking a key keeps its row (and its name) so that
//! `keys list` shows what was revoked and when; the bot user stays as the
//! author of what it wrote.

use async_trait::async_trait;
use roomcast_domain::{Scopes, ServiceKeyId, Timestamp, User, Username};

use crate::StorageError;

type Result<T> = std::result::Result<T, StorageError>;

/// A key to store. The key itself is never given to storage.
#[derive(Debug, Clone)]
pub struct NewServiceKey {
    /// The key's name, which is also its bot user's username.
    pub name: Username,
    /// SHA-256 of the key, lowercase hex.
    pub key_hash: String,
    pub scopes: Scopes,
}

/// A stored key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    pub id: ServiceKeyId,
    pub name: Username,
    pub scopes: Scopes,
    /// The account the key acts as.
    pub bot: User,
    pub created: Timestamp,
    /// When it was revoked; a revoked key is refused.
    pub revoked: Option<Timestamp>,
}

/// Service keys and their bot users.
#[async_trait]
pub trait ServiceKeyRepository: Send + Sync {
    /// Stores a key and creates its bot user (one transaction).
    /// `Conflict("username")` when a user (or another key, whose bot user
    /// has its name) already has that name.
    async fn create_service_key(&self, new: NewServiceKey) -> Result<ServiceKey>;
    /// Every key, revoked ones included, by name.
    async fn service_keys(&self) -> Result<Vec<ServiceKey>>;
    /// Revokes the key named `name`: false when it already was revoked,
    /// `NotFound` when there is no such key.
    async fn revoke_service_key(&self, name: &Username) -> Result<bool>;
    /// The live (not revoked) key whose hash is `key_hash`.
    async fn live_service_key(&self, key_hash: &str) -> Result<Option<ServiceKey>>;
}
