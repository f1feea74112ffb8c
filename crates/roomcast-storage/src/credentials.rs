//! Inputs and outputs of the credential repository.

use roomcast_domain::{RefreshFamily, Timestamp, User, UserId};

/// A user with what is needed to check their password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    /// The argon2 PHC string; `None` for accounts that cannot log in.
    pub password_hash: Option<String>,
}

/// The first refresh token of a login (its hash only).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub user_id: UserId,
    /// The login this token starts; its rotations stay in it.
    pub family: RefreshFamily,
    pub expires: Timestamp,
}

/// The token that replaces a rotated one (its hash only). Its user and
/// family are the rotated token's, read in the same transaction, so the
/// caller does not (and cannot) name them.
#[derive(Debug, Clone)]
pub struct RotatedRefreshToken {
    pub token_hash: String,
    pub expires: Timestamp,
}

/// Whose a live refresh token is: what a rotation returns, and what
/// [`crate::CredentialRepository::refresh_token_owner`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOwner {
    pub user_id: UserId,
    pub family: RefreshFamily,
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// Never issued, expired, or its family was revoked.
    Unknown,
    /// Already rotated or logged out: a replay. Its family is now revoked.
    Reused,
}
