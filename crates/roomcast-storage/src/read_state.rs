//! Read positions and unread counts: what each participant has read of a
//! room, kept by [`crate::ReadRepository`] on every backend.
//!
//! Counting is left to the database's triggers (migration 0005 on both
//! backends): a room keeps how many of its messages are live, a participant
//! how many of those they wrote or have read, and `unread` is the
//! difference, so a list of a thousand rooms reads a thousand rows, never
//! their messages.

use roomcast_domain::{Room, Seq};

use crate::StorageError;
use crate::rows::{self, StoredRow};

/// A participant's read state in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadState {
    /// The room's latest seq.
    pub last_seq: Seq,
    /// The participant's read position: every event up to it is read.
    pub read_seq: Seq,
    /// Live messages of others after `read_seq`.
    pub unread: u64,
}

/// What [`crate::ReadRepository::mark_read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    /// The read state after the call.
    pub state: ReadState,
    /// False when the position did not move (it was already there or
    /// further): nothing to tell anyone.
    pub moved: bool,
}

/// A room of a user's room list with that user's read state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListing {
    pub room: Room,
    pub read: ReadState,
}

/// Columns [`read_state`] reads, from `participants me JOIN rooms r`.
pub(crate) const READ_STATE_COLUMNS: &str =
    "r.last_seq, me.read_seq, r.live_messages - me.seen AS unread";

pub(crate) fn read_state<R: StoredRow>(row: &R) -> Result<ReadState, StorageError> {
    Ok(ReadState {
        last_seq: rows::seq(row, "last_seq")?,
        read_seq: rows::seq(row, "read_seq")?,
        // Never negative while the triggers keep the counts; a negative
        // one would be a bug there, shown as nothing unread.
        unread: row.int("unread")?.max(0) as u64,
    })
}
