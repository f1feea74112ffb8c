//! The stored things: users, rooms and messages, as the rest of the server
//! handles them (wire shapes live in [`crate::wire`]).

use crate::{ClientId, MessageId, RoomId, RoomSlug, Seq, Timestamp, UserId, Username, Visibility};

/// A user account. Passwords and tokens are not part of it on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub name: String,
    /// The avatar's file name, as the seed's `user.avatar.name`.
    pub avatar: Option<String>,
}

/// A chat room, addressed by its host's username and its slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: RoomId,
    pub host: Username,
    pub slug: RoomSlug,
    pub name: String,
    pub description: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub participants_count: u64,
    /// Who may join.
    pub visibility: Visibility,
}

/// A chat message with its author's public fields, as the seed's
/// `Message.serialize()` needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub room_id: RoomId,
    pub user_id: UserId,
    pub username: Username,
    pub user_avatar: Option<String>,
    /// Empty only when replaying a message that was deleted since.
    pub body: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub edited: bool,
    pub client_id: Option<ClientId>,
    /// The seq of the message's `new` event: its place in the room's order.
    pub seq: Seq,
}
