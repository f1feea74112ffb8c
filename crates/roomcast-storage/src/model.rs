//! Inputs and outputs of repository calls that are not domain entities.

use roomcast_domain::{
    ClientId, Event, MessageBody, Room, RoomId, RoomSlug, User, UserId, Username, Visibility,
};

/// A user account to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub name: String,
    pub email: Option<String>,
    /// An argon2 PHC string; `None` for accounts that cannot log in
    /// (fixture users, service accounts).
    pub password_hash: Option<String>,
}

/// A room to create; its host becomes its first participant.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub host: UserId,
    pub slug: RoomSlug,
    pub name: String,
    pub description: String,
    pub visibility: Visibility,
}

/// A message to post.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room_id: RoomId,
    /// The author, whose public fields go into the `new` event.
    pub author: User,
    pub body: MessageBody,
    pub client_id: Option<ClientId>,
}

/// What posting produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The message's `new` event.
    pub event: Event,
    /// True when the `clientId` had been used before: `event` is the
    /// original one and nothing new was stored.
    pub duplicate: bool,
}

/// A room to ensure exists with at least these members (fixtures, imports).
#[derive(Debug, Clone)]
pub struct RoomSeed {
    pub host: Username,
    pub slug: RoomSlug,
    pub members: Vec<Username>,
}

/// What a WebSocket handshake checks, read in one round trip by
/// [`crate::RoomRepository::admission`].
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The user, if it exists.
    pub user: Option<User>,
    /// The room at the address asked for, if any.
    pub room: Option<Room>,
    /// Whether the user takes part in that room.
    pub participant: bool,
}

/// A seeded room with every member the seed named.
#[derive(Debug, Clone)]
pub struct SeededRoom {
    pub room: Room,
    pub members: Vec<User>,
}

/// How a backend commits message writes (posts, edits, deletes).
///
/// Why it is configurable at all: the benchmark compares group commit with
/// one commit per write, and operators may want more PostgreSQL writer
/// connections on a machine with more cores. The default is what production
/// runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// At most this many writes share one transaction: it bounds one
    /// batch's latency under any load. 1 means one commit per write.
    pub max_batch: usize,
    /// Writer connections, each committing its own batches (PostgreSQL; the
    /// SQLite backend always has one writer). A room always goes to the
    /// same writer, so a room's writes of one process stay in order.
    pub writers: usize,
}

impl CommitPolicy {
    /// One commit per write: the behaviour group commit is measured against.
    pub const ONE_PER_WRITE: CommitPolicy = CommitPolicy {
        max_batch: 1,
        writers: 1,
    };
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            max_batch: 512,
            writers: 1,
        }
    }
}
