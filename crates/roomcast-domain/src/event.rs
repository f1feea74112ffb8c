//! The per-room event log: every change to a room's messages is an event with
//! the next sequence number of that room.

use std::fmt;

use crate::{Message, MessageBody, MessageId, RoomId, Timestamp};

/// A room's event sequence number: 1 for its first event, then exactly one
/// more for each stored event. A gap means a missed event. On the wire it
/// is a plain JSON number.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(u64);

/// A negative integer was read where a seq was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a seq is never negative, got {0}")]
pub struct NegativeSeq(pub i64);

impl Seq {
    /// Before a room's first event: what a room's log starts from.
    pub const ZERO: Seq = Seq(0);

    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The seq of the event after this one.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The seq of the event before this one ([`Seq::ZERO`] stays itself).
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl From<u64> for Seq {
    fn from(n: u64) -> Self {
        Self(n)
    }
}

impl From<Seq> for u64 {
    fn from(seq: Seq) -> u64 {
        seq.0
    }
}

/// The one conversion from the signed integer databases store seqs in.
impl TryFrom<i64> for Seq {
    type Error = NegativeSeq;
    fn try_from(n: i64) -> Result<Self, NegativeSeq> {
        u64::try_from(n).map(Self).map_err(|_| NegativeSeq(n))
    }
}

/// Parses the decimal form of a query string (`?since=42`).
impl std::str::FromStr for Seq {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// A seq against a count or a literal (`seq == 3`, tests mostly).
impl PartialEq<u64> for Seq {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

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
        /// `None` when the message was deleted since: a deletion takes its
        /// bodies out of the log, edits included.
        body: Option<MessageBody>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_come_from_non_negative_integers_only() {
        assert_eq!(Seq::try_from(7_i64), Ok(Seq::new(7)));
        assert_eq!(Seq::try_from(0_i64), Ok(Seq::ZERO));
        assert_eq!(Seq::try_from(-1_i64), Err(NegativeSeq(-1)));
    }

    #[test]
    fn seqs_are_plain_numbers_on_the_wire() {
        assert_eq!(serde_json::to_string(&Seq::new(42)).expect("json"), "42");
        let back: Seq = serde_json::from_str("42").expect("json");
        assert_eq!(back, Seq::new(42));
        assert!(serde_json::from_str::<Seq>("-1").is_err());
    }
}
