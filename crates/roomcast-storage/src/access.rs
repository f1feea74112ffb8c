//! Who may come back: the host's ban list of each room, and the login
//! sessions that ended (logout), shared by every node through the database.

use async_trait::async_trait;
use roomcast_domain::{RoomId, Timestamp, UserId};

use crate::StorageError;

type Result<T> = std::result::Result<T, StorageError>;

/// Bans and ended sessions.
#[async_trait]
pub trait AccessRepository: Send + Sync {
    /// Whether the host removed `user` from `room` and has not added them back.
    async fn is_banned(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// The host removes a participant: they leave and may not join again
    /// (one transaction). False when they were not a participant.
    async fn ban_participant(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// The host adds a participant, lifting any ban (one transaction).
    /// False when they already were one. `NotFound` for no such user or room.
    async fn readmit_participant(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// Records that a login session ended: its access tokens are refused
    /// until `expires`, when they would have expired anyway.
    async fn revoke_session(&self, session: uuid::Uuid, expires: Timestamp) -> Result<()>;
    /// Sessions revoked at or after `since` that have not expired, with
    /// when each was revoked: what a node polls to learn of other nodes'
    /// logouts.
    async fn revoked_sessions_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(uuid::Uuid, Timestamp)>>;
    /// Forgets revocations that expired before `now`. Returns how many.
    async fn prune_revoked_sessions(&self, now: Timestamp) -> Result<u64>;
}
