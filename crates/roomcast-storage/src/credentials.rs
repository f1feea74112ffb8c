//! Inputs and outputs of the credential repository.

use roomcast_domain::{Timestamp, User, UserId};

/// A user with what is needed to check their password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    /// The argon2 PHC string; `None` for accounts that cannot log in.
    pub password_hash: Option<String>,
}

/// A refresh token to store (its hash only).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub user_id: UserId,
    /// The login this token descends from; rotation keeps it.
    pub family: uuid::Uuid,
    pub expires: Timestamp,
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// Never issued, expired, or its family was revoked.
    Unknown,
    /// Already rotated or logged out: a replay. Its family is now revoked.
    Reused,
}
