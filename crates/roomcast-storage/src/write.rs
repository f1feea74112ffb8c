//! The message writes both backends hand to their group-commit writers.

use roomcast_domain::{Event, MessageBody, MessageId, RoomId, UserId};

use crate::{NewMessage, Posted, StorageError};

/// A write a writer task performs inside a batch.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Post(NewMessage),
    Edit {
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    },
    Delete {
        room: RoomId,
        author: UserId,
        id: MessageId,
    },
}

impl WriteOp {
    /// The room whose sequence this write advances.
    pub(crate) fn room(&self) -> RoomId {
        match self {
            WriteOp::Post(new) => new.room_id,
            WriteOp::Edit { room, .. } | WriteOp::Delete { room, .. } => *room,
        }
    }
}

#[derive(Debug)]
pub(crate) enum WriteOutcome {
    Posted(Posted),
    Event(Event),
}

impl WriteOutcome {
    /// The outcome of a post; anything else is a writer bug, not a panic.
    pub(crate) fn posted(self) -> Result<Posted, StorageError> {
        match self {
            WriteOutcome::Posted(p) => Ok(p),
            WriteOutcome::Event(_) => Err(out_of_kind()),
        }
    }

    /// The outcome of an edit or a delete.
    pub(crate) fn event(self) -> Result<Event, StorageError> {
        match self {
            WriteOutcome::Event(e) => Ok(e),
            WriteOutcome::Posted(_) => Err(out_of_kind()),
        }
    }
}

fn out_of_kind() -> StorageError {
    StorageError::Corrupt("writer answered out of kind".into())
}
