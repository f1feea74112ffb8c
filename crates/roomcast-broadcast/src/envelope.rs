//! What travels through a channel layer.

use bytes::Bytes;
use roomcast_domain::{Seq, UserId};

use crate::presence::PresenceNotice;

/// One unit of fan-out for a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A stored event, its frame serialized once. `seq` lets receivers put
    /// events in order, drop duplicates and notice gaps without parsing.
    Event { seq: Seq, frame: Bytes },
    /// An ephemeral frame (typing, read receipts...): not stored, no order
    /// promised, and dropped or coalesced for a socket that lags rather
    /// than closing it. `from`: the user it comes from, whose own sockets
    /// do not get it back.
    Ephemeral { frame: Bytes, from: Option<UserId> },
    /// A node's presence news for the room (see [`crate::presence`]):
    /// turned into `join` / `leave` by each node, never sent as is.
    Presence(PresenceNotice),
    /// Close this user's sockets in the room: their membership was revoked.
    Evict { user: UserId },
}

impl Envelope {
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Envelope::Event { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}
