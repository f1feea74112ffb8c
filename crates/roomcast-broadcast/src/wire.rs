//! The bytes an [`Envelope`] travels as between nodes (the Redis layer's
//! payload).
//!
//! Binary, not JSON: the frame inside an event is already JSON and is sent
//! as is, so wrapping it in more JSON would mean escaping every quote of
//! every message on every hop. The header is fixed-size so decoding is a
//! few slice reads, and the frame is a zero-copy slice of the payload.
//!
//! Layout, version 1 (integers big-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | version, `1` |
//! | 1..17 | the publishing node's id (16 bytes) |
//! | 17 | kind: `1` event, `2` ephemeral, `3` evict, `4` stale, `5` ephemeral from a user, `6` presence |
//! | event | `seq` (8 bytes), then the frame (the rest) |
//! | ephemeral | the frame (the rest) |
//! | evict | the user's UUID (16 bytes), nothing after |
//! | stale | nothing after |
//! | ephemeral from a user | the user's UUID (16 bytes), then the frame (the rest) |
//! | presence | the speaking hub's UUID (16), then `1` online: user (16) and username (the rest); `2` offline: user (16); `3` snapshot: per user, UUID (16), name length (2), name |
//!
//! The node id lets a layer drop its own publications (Redis echoes a
//! PUBLISH to every subscriber of the channel, the publisher's own
//! subscriber connection included). `stale` is the layer's own control
//! message, not an envelope: "I could not publish some events of this room;
//! fetch them from storage". A new field in an existing kind means a new
//! version byte; a node drops (and logs) versions and kinds it does not know
//! instead of guessing (kinds 5 and 6 were added that way: a node that
//! predates them drops typing and presence news, never stored events).

use bytes::{BufMut, Bytes, BytesMut};
use roomcast_domain::{Seq, UserId, Username};
use uuid::Uuid;

use crate::Envelope;
use crate::presence::{PresenceChange, PresenceNotice};

/// The format version this build writes and reads.
pub const WIRE_VERSION: u8 = 1;

const HEADER: usize = 1 + 16 + 1;
const KIND_EVENT: u8 = 1;
const KIND_EPHEMERAL: u8 = 2;
const KIND_EVICT: u8 = 3;
const KIND_STALE: u8 = 4;
const KIND_EPHEMERAL_FROM: u8 = 5;
const KIND_PRESENCE: u8 = 6;
const PRESENCE_ONLINE: u8 = 1;
const PRESENCE_OFFLINE: u8 = 2;
const PRESENCE_SNAPSHOT: u8 = 3;

/// Which node published a message: random per process start, so two nodes
/// (or one node restarted) never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; 16]);

impl NodeId {
    pub fn random() -> Self {
        Self(*Uuid::new_v4().as_bytes())
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Uuid::from_bytes(self.0).simple().fmt(f)
    }
}

/// What a payload carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    Envelope(Envelope),
    /// The publisher lost publications for the room: receivers resync it
    /// from storage.
    Stale,
}

/// A payload that is not version 1 of the format above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty payload")]
    Empty,
    #[error("unknown wire version {0}")]
    Version(u8),
    #[error("payload truncated: {0} bytes")]
    Truncated(usize),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
    #[error("invalid presence news")]
    Presence,
}

/// Encodes `message` as published by `node`.
pub fn encode(node: NodeId, message: &WireMessage) -> Bytes {
    let body = match message {
        WireMessage::Envelope(Envelope::Event { frame, .. }) => 8 + frame.len(),
        WireMessage::Envelope(Envelope::Ephemeral { frame, .. }) => 16 + frame.len(),
        WireMessage::Envelope(Envelope::Evict { .. }) => 16,
        WireMessage::Envelope(Envelope::Presence(_)) => 64,
        WireMessage::Stale => 0,
    };
    let mut out = BytesMut::with_capacity(HEADER + body);
    out.put_u8(WIRE_VERSION);
    out.put_slice(&node.0);
    match message {
        WireMessage::Envelope(Envelope::Event { seq, frame }) => {
            out.put_u8(KIND_EVENT);
            out.put_u64(seq.get());
            out.put_slice(frame);
        }
        WireMessage::Envelope(Envelope::Ephemeral { frame, from: None }) => {
            out.put_u8(KIND_EPHEMERAL);
            out.put_slice(frame);
        }
        WireMessage::Envelope(Envelope::Ephemeral {
            frame,
            from: Some(user),
        }) => {
            out.put_u8(KIND_EPHEMERAL_FROM);
            out.put_slice(user.as_uuid().as_bytes());
            out.put_slice(frame);
        }
        WireMessage::Envelope(Envelope::Presence(notice)) => {
            out.put_u8(KIND_PRESENCE);
            put_presence(&mut out, notice);
        }
        WireMessage::Envelope(Envelope::Evict { user }) => {
            out.put_u8(KIND_EVICT);
            out.put_slice(user.as_uuid().as_bytes());
        }
        WireMessage::Stale => out.put_u8(KIND_STALE),
    }
    out.freeze()
}

/// Decodes a payload; the frame shares `payload`'s memory.
pub fn decode(payload: &Bytes) -> Result<(NodeId, WireMessage), WireError> {
    let version = *payload.first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    if payload.len() < HEADER {
        return Err(WireError::Truncated(payload.len()));
    }
    let mut node = [0u8; 16];
    node.copy_from_slice(&payload[1..17]);
    let node = NodeId(node);
    let rest = payload.slice(HEADER..);
    let message = match payload[17] {
        KIND_EVENT => {
            let seq: [u8; 8] = rest
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Truncated(payload.len()))?;
            WireMessage::Envelope(Envelope::Event {
                seq: Seq::new(u64::from_be_bytes(seq)),
                frame: rest.slice(8..),
            })
        }
        KIND_EPHEMERAL => WireMessage::Envelope(Envelope::Ephemeral {
            frame: rest,
            from: None,
        }),
        KIND_EPHEMERAL_FROM => {
            let user = uuid_at(&rest, 0).ok_or(WireError::Truncated(payload.len()))?;
            WireMessage::Envelope(Envelope::Ephemeral {
                frame: rest.slice(16..),
                from: Some(UserId::from_uuid(user)),
            })
        }
        KIND_PRESENCE => WireMessage::Envelope(Envelope::Presence(decode_presence(&rest)?)),
        KIND_EVICT => {
            let user: [u8; 16] = rest
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Truncated(payload.len()))?;
            if rest.len() > 16 {
                return Err(WireError::Trailing(rest.len() - 16));
            }
            WireMessage::Envelope(Envelope::Evict {
                user: UserId::from_uuid(Uuid::from_bytes(user)),
            })
        }
        KIND_STALE if rest.is_empty() => WireMessage::Stale,
        KIND_STALE => return Err(WireError::Trailing(rest.len())),
        other => return Err(WireError::Kind(other)),
    };
    Ok((node, message))
}

fn uuid_at(bytes: &[u8], at: usize) -> Option<Uuid> {
    let raw: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    Some(Uuid::from_bytes(raw))
}

fn put_presence(out: &mut BytesMut, notice: &PresenceNotice) {
    out.put_slice(notice.node.as_bytes());
    match &notice.change {
        PresenceChange::Online { user, name } => {
            out.put_u8(PRESENCE_ONLINE);
            out.put_slice(user.as_uuid().as_bytes());
            out.put_slice(name.as_str().as_bytes());
        }
        PresenceChange::Offline { user } => {
            out.put_u8(PRESENCE_OFFLINE);
            out.put_slice(user.as_uuid().as_bytes());
        }
        PresenceChange::Snapshot { users } => {
            out.put_u8(PRESENCE_SNAPSHOT);
            for (user, name) in users {
                out.put_slice(user.as_uuid().as_bytes());
                // Names are at most a few hundred bytes (MAX_NAME_CHARS).
                let name = name.as_str().as_bytes();
                let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
                out.put_u16(len);
                out.put_slice(&name[..usize::from(len)]);
            }
        }
    }
}

/// A presence notice alone (no header): what a node stores as its room
/// state in the layer (a snapshot) and what kind 6 carries.
pub fn encode_presence(notice: &PresenceNotice) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    put_presence(&mut out, notice);
    out.freeze()
}

/// The inverse of [`encode_presence`].
pub fn decode_presence(bytes: &[u8]) -> Result<PresenceNotice, WireError> {
    let node = uuid_at(bytes, 0).ok_or(WireError::Presence)?;
    let op = *bytes.get(16).ok_or(WireError::Presence)?;
    let rest = &bytes[17..];
    let name_of = |raw: &[u8]| {
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| Username::parse(s).ok())
            .ok_or(WireError::Presence)
    };
    let change = match op {
        PRESENCE_ONLINE => PresenceChange::Online {
            user: UserId::from_uuid(uuid_at(rest, 0).ok_or(WireError::Presence)?),
            name: name_of(&rest[16..])?,
        },
        PRESENCE_OFFLINE if rest.len() == 16 => PresenceChange::Offline {
            user: UserId::from_uuid(uuid_at(rest, 0).ok_or(WireError::Presence)?),
        },
        PRESENCE_SNAPSHOT => {
            let mut users = Vec::new();
            let mut at = 0;
            while at < rest.len() {
                let user = uuid_at(rest, at).ok_or(WireError::Presence)?;
                let len: [u8; 2] = rest
                    .get(at + 16..at + 18)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(WireError::Presence)?;
                let end = at + 18 + usize::from(u16::from_be_bytes(len));
                let name = name_of(rest.get(at + 18..end).ok_or(WireError::Presence)?)?;
                users.push((UserId::from_uuid(user), name));
                at = end;
            }
            PresenceChange::Snapshot { users }
        }
        _ => return Err(WireError::Presence),
    };
    Ok(PresenceNotice { node, change })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: WireMessage) {
        let node = NodeId::random();
        let bytes = encode(node, &message);
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode(&bytes), Ok((node, message)));
    }

    #[test]
    fn every_kind_of_message_round_trips() {
        round_trip(WireMessage::Envelope(Envelope::Event {
            seq: Seq::new(42),
            frame: Bytes::from_static("{\"body\":\"é 😀\"}".as_bytes()),
        }));
        round_trip(WireMessage::Envelope(Envelope::Event {
            seq: Seq::new(u64::MAX),
            frame: Bytes::new(),
        }));
        round_trip(WireMessage::Envelope(Envelope::Ephemeral {
            frame: Bytes::from_static(b"{\"type\":\"chat_event\"}"),
            from: None,
        }));
        round_trip(WireMessage::Envelope(Envelope::Ephemeral {
            frame: Bytes::new(),
            from: None,
        }));
        round_trip(WireMessage::Envelope(Envelope::Ephemeral {
            frame: Bytes::from_static(b"{\"action\":\"typing\"}"),
            from: Some(UserId::new()),
        }));
        let name = |s: &str| Username::parse(s).expect("name");
        for change in [
            PresenceChange::Online {
                user: UserId::new(),
                name: name("alice"),
            },
            PresenceChange::Offline {
                user: UserId::new(),
            },
            PresenceChange::Snapshot { users: vec![] },
            PresenceChange::Snapshot {
                users: vec![
                    (UserId::new(), name("bob")),
                    (UserId::new(), name("elodie_2")),
                ],
            },
        ] {
            round_trip(WireMessage::Envelope(Envelope::Presence(PresenceNotice {
                node: Uuid::new_v4(),
                change,
            })));
        }
        round_trip(WireMessage::Envelope(Envelope::Evict {
            user: UserId::new(),
        }));
        round_trip(WireMessage::Stale);
    }

    #[test]
    fn the_header_is_eighteen_bytes_and_the_frame_is_not_copied_or_escaped() {
        let frame = Bytes::from_static(b"{\"a\":\"\\\"\"}");
        let bytes = encode(
            NodeId::random(),
            &WireMessage::Envelope(Envelope::Event {
                seq: Seq::new(1),
                frame: frame.clone(),
            }),
        );
        assert_eq!(bytes.len(), 18 + 8 + frame.len());
        assert_eq!(&bytes[26..], &frame[..]);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let node = NodeId::random();
        let event = encode(
            node,
            &WireMessage::Envelope(Envelope::Event {
                seq: Seq::new(7),
                frame: Bytes::from_static(b"x"),
            }),
        );
        let evict = encode(
            node,
            &WireMessage::Envelope(Envelope::Evict {
                user: UserId::new(),
            }),
        );
        let cases: Vec<(Bytes, WireError)> = vec![
            (Bytes::new(), WireError::Empty),
            (
                Bytes::from_static(b"{\"type\":\"x\"}"),
                WireError::Version(b'{'),
            ),
            (Bytes::from_static(&[2, 0, 0]), WireError::Version(2)),
            (Bytes::from_static(&[1, 0, 0]), WireError::Truncated(3)),
            (event.slice(..20), WireError::Truncated(20)),
            (evict.slice(..30), WireError::Truncated(30)),
            (
                Bytes::from([&evict[..], b"!"].concat()),
                WireError::Trailing(1),
            ),
            (
                Bytes::from([&event[..17], &[9u8][..]].concat()),
                WireError::Kind(9),
            ),
            (
                Bytes::from([&event[..17], &[KIND_STALE, 0][..]].concat()),
                WireError::Trailing(1),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(&bytes), Err(expected), "{bytes:?}");
        }
    }

    #[test]
    fn every_prefix_and_every_byte_flip_decodes_or_errs_without_panicking() {
        let node = NodeId::random();
        let samples = [
            encode(
                node,
                &WireMessage::Envelope(Envelope::Event {
                    seq: Seq::new(3),
                    frame: Bytes::from_static(b"{\"seq\":3}"),
                }),
            ),
            encode(
                node,
                &WireMessage::Envelope(Envelope::Evict {
                    user: UserId::new(),
                }),
            ),
            encode(node, &WireMessage::Stale),
        ];
        for sample in samples {
            for len in 0..=sample.len() {
                let _ = decode(&sample.slice(..len));
            }
            for at in 0..sample.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bytes = sample.to_vec();
                    bytes[at] ^= flip;
                    let _ = decode(&Bytes::from(bytes));
                }
            }
        }
    }
}
