//! What travels through a channel layer.

use bytes::Bytes;
use roomcast_domain::{Seq, UserId};

/// One unit of fan-out for a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A stored event, its frame serialized once. `seq` lets receivers put
    /// events in order, drop duplicates and notice gaps without parsing.
    Event { seq: Seq, frame: Bytes },
    /// An ephemeral frame (typing, presence): not stored, no order promised.
    Ephemeral { frame: Bytes },
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
