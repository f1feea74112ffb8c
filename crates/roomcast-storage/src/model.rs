//! Inputs and outputs of repository calls that are not domain entities.

use roomcast_domain::{
    ClientId, Event, MessageBody, Room, RoomId, RoomSlug, User, UserId, Username,
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

/// A seeded room with every member the seed named.
#[derive(Debug, Clone)]
pub struct SeededRoom {
    pub room: Room,
    pub members: Vec<User>,
}
