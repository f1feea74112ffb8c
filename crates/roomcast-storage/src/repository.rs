//! The repository traits: one per model, in the same method order and with
//! the same doc comments as every implementation.

use async_trait::async_trait;
use roomcast_domain::{
    Event, Message, MessageBody, MessageId, RefreshFamily, Room, RoomId, RoomSlug, Seq, User,
    UserId, Username,
};

use crate::{
    Admission, Credentials, NewMessage, NewRefreshToken, NewRoom, NewUser, PendingWrite, Posted,
    ReadMark, ReadState, RefreshOwner, RefreshRefusal, RoomListing, RoomSeed, RotatedRefreshToken,
    SeededRoom, StorageError, WriteOp, WriteOutcome,
};

type Result<T> = std::result::Result<T, StorageError>;

/// User accounts.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates an account. `Conflict("username")` or `Conflict("email")`
    /// when taken (email compared case-insensitively).
    async fn create_user(&self, new: NewUser) -> Result<User>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &Username) -> Result<Option<User>>;
}

/// Rooms and who takes part in them.
#[async_trait]
pub trait RoomRepository: Send + Sync {
    /// Creates a room with its host as first participant.
    /// `Conflict("room")` when the host already has that slug.
    async fn create_room(&self, new: NewRoom) -> Result<Room>;
    /// The room `{host}/{slug}` of the WebSocket path.
    async fn room_by_address(&self, host: &Username, slug: &RoomSlug) -> Result<Option<Room>>;
    async fn is_participant(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// The user `user`, the room at `host`/`slug` and whether the one takes
    /// part in the other: what every WebSocket handshake checks, answered
    /// in one round trip.
    async fn admission(&self, user: UserId, host: &Username, slug: &RoomSlug) -> Result<Admission>;
    /// Adds a participant; false when they already were one.
    async fn add_participant(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// Removes a participant; false when they were not one.
    async fn remove_participant(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// The room's participants, by username.
    async fn participants(&self, room: RoomId) -> Result<Vec<User>>;
    /// The rooms a user takes part in, newest first.
    async fn rooms_of(&self, user: UserId) -> Result<Vec<Room>>;
    /// Ensures users, rooms and participants exist, in bulk and without
    /// breaking what is there: what exists is kept, what is missing is added.
    /// New rooms are public.
    async fn seed_rooms(&self, seeds: &[RoomSeed]) -> Result<Vec<SeededRoom>>;
}

/// Messages and the per-room event log.
#[async_trait]
pub trait MessageRepository: Send + Sync {
    /// Stores a message and its `new` event with the room's next seq. With a
    /// `clientId` already used by this author in this room, stores nothing
    /// and returns the original event (`duplicate: true`).
    async fn post_message(&self, new: NewMessage) -> Result<Posted>;
    /// Edits a message of `room` written by `author`: `NotFound` when there is
    /// no such message in that room, `Forbidden` when `author` did not write it.
    async fn edit_message(
        &self,
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    ) -> Result<Event>;
    /// Deletes a message, under the same rules as `edit_message`. Earlier
    /// events of the message keep their seq but lose their body.
    async fn delete_message(&self, room: RoomId, author: UserId, id: MessageId) -> Result<Event>;
    /// Queues a write and returns as soon as it holds its place in its
    /// room's order, with its outcome to await. Writes a caller queues one
    /// after another commit in that order: so a socket can keep several in
    /// flight (sharing commits) and still see them stored as it sent them.
    /// Backends without a write queue keep this default, which finishes
    /// the write before returning: the same order, without the overlap.
    async fn queue_write(&self, op: WriteOp) -> Result<PendingWrite> {
        let outcome = match op {
            WriteOp::Post(new) => self.post_message(new).await.map(WriteOutcome::Posted),
            WriteOp::Edit {
                room,
                author,
                id,
                body,
            } => self
                .edit_message(room, author, id, body)
                .await
                .map(WriteOutcome::Event),
            WriteOp::Delete { room, author, id } => self
                .delete_message(room, author, id)
                .await
                .map(WriteOutcome::Event),
        };
        Ok(PendingWrite::new(std::future::ready(outcome)))
    }
    /// Stored events of a room with seq > `after`, in order, at most `limit`.
    async fn events_since(&self, room: RoomId, after: Seq, limit: u32) -> Result<Vec<Event>>;
    /// The room's latest seq (0 before its first event).
    async fn last_seq(&self, room: RoomId) -> Result<Seq>;
    /// The oldest seq still in the room's log (`last_seq + 1` when the log
    /// is empty): a client behind it cannot resume and must reload.
    async fn first_kept_seq(&self, room: RoomId) -> Result<Seq>;
    /// `(last_seq, first_kept_seq)` read together: what a resuming socket
    /// needs, in one round trip where the backend can (a reconnect storm
    /// is thousands of these at once). This default makes two.
    async fn log_bounds(&self, room: RoomId) -> Result<(Seq, Seq)> {
        let last = self.last_seq(room).await?;
        let first_kept = self.first_kept_seq(room).await?;
        Ok((last, first_kept))
    }
    /// Drops events older than `before` from every room's log (retention);
    /// messages themselves stay. Returns how many were dropped.
    async fn prune_events(&self, before: roomcast_domain::Timestamp) -> Result<u64>;
    /// Live messages created before `before` (or the newest), oldest first,
    /// at most `limit`.
    async fn history(
        &self,
        room: RoomId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>>;
}

/// Read positions and unread counts (PROTOCOL.md: the `read` frame,
/// `PUT .../read`, `GET /api/rooms`).
#[async_trait]
pub trait ReadRepository: Send + Sync {
    /// Moves `user`'s read position in `room` forward to `seq`, clamped to
    /// the room's last seq; never backwards. `NotFound` when the user does
    /// not take part in the room.
    async fn mark_read(&self, room: RoomId, user: UserId, seq: Seq) -> Result<ReadMark>;
    /// `user`'s read state in `room`; `None` when not a participant.
    async fn read_state(&self, room: RoomId, user: UserId) -> Result<Option<ReadState>>;
    /// The rooms a user takes part in, newest first, each with the user's
    /// read state: one row per room, whatever the rooms hold.
    async fn room_list(&self, user: UserId) -> Result<Vec<RoomListing>>;
}

/// Passwords and refresh tokens.
#[async_trait]
pub trait CredentialRepository: Send + Sync {
    /// The user whose username is `login`, or whose email is `login`
    /// (case-insensitively), with their password hash.
    async fn credentials(&self, login: &str) -> Result<Option<Credentials>>;
    /// Stores the first refresh token of a login. `NotFound` for an
    /// unknown user.
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<()>;
    /// Atomically marks `old_hash` used and stores `next` for the same user
    /// and family, which it returns. A used token presented again revokes
    /// the whole family.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        next: RotatedRefreshToken,
    ) -> Result<std::result::Result<RefreshOwner, RefreshRefusal>>;
    /// The user and family of a live (unused, unexpired) token.
    async fn refresh_token_owner(&self, hash: &str) -> Result<Option<RefreshOwner>>;
    /// Marks every token of the family used (logout).
    async fn revoke_refresh_family(&self, family: RefreshFamily) -> Result<()>;
}

/// A whole backend: what the server holds as `Arc<dyn Store>`.
#[async_trait]
pub trait Store:
    UserRepository
    + RoomRepository
    + MessageRepository
    + ReadRepository
    + CredentialRepository
    + crate::AccessRepository
    + crate::ServiceKeyRepository
    + std::fmt::Debug
{
    /// A cheap round trip to the database, for readiness checks.
    async fn health(&self) -> Result<()>;
    /// The backend's name for logs (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
}
