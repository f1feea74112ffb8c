//! The per-room event log: every change to a room's messages is an event with
//! the next sequence number of that room.

use crate::{Message, MessageId, RoomId, Timestamp};

/// A room's event sequence number: 1 for its first event, then exactly one
/// more for each stored event. A gap means a missed event.
pub type Seq = u64;

/// One stored change to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub room_id: RoomId,
    pub seq: Seq,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A message was posted.
    New(Message),
    /// A message's body was edited.
    Update {
        id: MessageId,
        body: String,
        edited: bool,
        updated: Timestamp,
    },
    /// A message was deleted.
    Delete { id: MessageId },
}

impl Event {
    /// The message this event is about.
    pub fn message_id(&self) -> MessageId {
        match &self.kind {
            EventKind::New(m) => m.id,
            EventKind::Update { id, .. } | EventKind::Delete { id } => *id,
        }
    }
}
