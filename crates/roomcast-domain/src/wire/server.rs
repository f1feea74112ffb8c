//! Frames the server sends: stored events (`chat_message`), ephemeral events
//! (`chat_event`) and errors (`{"error": ...}`).

use serde::{Deserialize, Serialize};

use crate::{Event, EventKind, MessageBody, MessageId, Seq, Timestamp, UserId, Username};

/// A frame from the server that is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// A stored event of the room (seed).
    #[serde(rename = "chat_message")]
    Message(ChatMessage),
    /// An ephemeral or control event (ext).
    #[serde(rename = "chat_event")]
    Event(ChatEvent),
}

/// The seed's three message actions, each with the room's `seq` (ext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ChatMessage {
    New(NewFrame),
    Update(UpdateFrame),
    Delete(DeleteFrame),
}

/// Field for field the seed's `Message.serialize()`, plus `seq` and `clientId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFrame {
    pub id: MessageId,
    pub user: Username,
    pub user_id: UserId,
    pub body: String,
    pub created: Timestamp,
    pub edited: bool,
    pub updated: Timestamp,
    #[serde(rename = "userAvatar")]
    pub user_avatar: Option<String>,
    pub seq: Seq,
    #[serde(rename = "clientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFrame {
    pub id: MessageId,
    pub body: String,
    pub edited: bool,
    pub updated: Timestamp,
    pub seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteFrame {
    pub id: MessageId,
    pub seq: Seq,
}

/// Ephemeral and control events (ext): never stored, carry no `seq` except
/// `synced`/`reset`, which name the room's latest one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ChatEvent {
    Typing {
        user: Username,
    },
    Presence {
        users: Vec<Username>,
    },
    Join {
        user: Username,
    },
    Leave {
        user: Username,
    },
    /// Replay after `?since=` is complete; live events follow.
    Synced {
        seq: Seq,
    },
    /// `since` is older than the kept log: reload history over HTTP.
    Reset {
        seq: Seq,
    },
    /// A read receipt: `user` has read the room up to `seq` (coalesced).
    Read {
        user: Username,
        seq: Seq,
    },
    /// User socket: an event was stored in `room` (`host/slug`); `seq` is
    /// its latest, `unread` the receiver's count there. No message body.
    Activity {
        room: String,
        seq: Seq,
        unread: u64,
    },
    /// User socket: the receiver now takes part in `room` (`host/slug`).
    Added {
        room: String,
    },
    /// User socket: the receiver no longer takes part in `room`.
    Removed {
        room: String,
    },
}

/// The machine-readable part of an error frame (ext). A new code is a
/// contract change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    TooLong,
    Empty,
    NotFound,
    Forbidden,
    BadFrame,
    RateLimited,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::TooLong => "too_long",
            ErrorCode::Empty => "empty",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// `{"error": "<human sentence>", "code": "<machine word>"}`, to the sender only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(rename = "clientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The `messageId` of the `update` or `delete` frame refused.
    #[serde(rename = "messageId", default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            code: Some(code),
            client_id: None,
            message_id: None,
        }
    }

    pub fn with_client_id(mut self, client_id: Option<String>) -> Self {
        self.client_id = client_id;
        self
    }

    pub fn with_message_id(mut self, message_id: Option<String>) -> Self {
        self.message_id = message_id;
        self
    }

    /// Names the frame refused by whichever of its ids it carries.
    pub fn refusing(self, ids: FrameIds) -> Self {
        self.with_client_id(ids.client_id)
            .with_message_id(ids.message_id)
    }
}

/// The ids a client frame carries, read even from a frame that does not
/// parse, so its refusal can name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameIds {
    pub client_id: Option<String>,
    pub message_id: Option<String>,
}

/// Anything a client may receive: what a client library decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(ServerFrame),
    Error(ErrorFrame),
}

impl Incoming {
    /// Decodes one text frame from the server.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Error(ErrorFrame),
            Frame(ServerFrame),
        }
        Ok(match serde_json::from_str::<Either>(text)? {
            Either::Error(e) => Incoming::Error(e),
            Either::Frame(f) => Incoming::Frame(f),
        })
    }
}

impl ServerFrame {
    /// The wire form of a stored event.
    pub fn from_event(event: &Event) -> Self {
        let seq = event.seq;
        let msg = match &event.kind {
            EventKind::New(m) => ChatMessage::New(NewFrame {
                seq,
                ..NewFrame::from_message(m)
            }),
            EventKind::Update {
                id,
                body,
                edited,
                updated,
            } => ChatMessage::Update(UpdateFrame {
                id: *id,
                body: body.as_ref().map_or("", MessageBody::as_str).to_owned(),
                edited: *edited,
                updated: *updated,
                seq,
            }),
            EventKind::Delete { id } => ChatMessage::Delete(DeleteFrame { id: *id, seq }),
        };
        ServerFrame::Message(msg)
    }

    /// The `seq` of a stored event's frame, `None` for ephemeral events.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            ServerFrame::Message(ChatMessage::New(f)) => Some(f.seq),
            ServerFrame::Message(ChatMessage::Update(f)) => Some(f.seq),
            ServerFrame::Message(ChatMessage::Delete(f)) => Some(f.seq),
            ServerFrame::Event(_) => None,
        }
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl NewFrame {
    /// A message as the seed serializes it, at its `new` event's seq.
    pub fn from_message(m: &crate::Message) -> Self {
        NewFrame {
            id: m.id,
            user: m.username.clone(),
            user_id: m.user_id,
            body: m.body.clone(),
            created: m.created,
            edited: m.edited,
            updated: m.updated,
            user_avatar: m.user_avatar.clone(),
            seq: m.seq,
            client_id: m.client_id.as_ref().map(|c| c.as_str().to_owned()),
        }
    }
}

impl ErrorFrame {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs into a String cannot fail: every map
    // key is a string and no Serialize impl here returns an error.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, RoomId};

    fn sample_message() -> Message {
        Message {
            id: MessageId::parse("0190a6a0-0000-7000-8000-000000000001").expect("id"),
            room_id: RoomId::new(),
            user_id: UserId::parse("0190a6a0-0000-7000-8000-0000000000aa").expect("id"),
            username: Username::parse("alice").expect("name"),
            user_avatar: None,
            body: "hello".into(),
            created: Timestamp::parse("2024-05-01T12:00:00Z").expect("ts"),
            updated: Timestamp::parse("2024-05-01T12:00:00Z").expect("ts"),
            edited: false,
            client_id: None,
            seq: Seq::new(1),
        }
    }

    #[test]
    fn new_frame_has_every_seed_field_in_seed_order() {
        let m = sample_message();
        let event = Event {
            room_id: m.room_id,
            seq: Seq::new(1),
            kind: EventKind::New(m),
        };
        assert_eq!(
            ServerFrame::from_event(&event).to_json(),
            concat!(
                r#"{"type":"chat_message","action":"new","id":"0190a6a0-0000-7000-8000-000000000001","#,
                r#""user":"alice","user_id":"0190a6a0-0000-7000-8000-0000000000aa","body":"hello","#,
                r#""created":"2024-05-01T12:00:00.000000+00:00","edited":false,"#,
                r#""updated":"2024-05-01T12:00:00.000000+00:00","userAvatar":null,"seq":1}"#
            )
        );
    }

    #[test]
    fn update_delete_and_error_frames_match_the_contract() {
        let id = MessageId::parse("0190a6a0-0000-7000-8000-000000000001").expect("id");
        let updated = Timestamp::parse("2024-05-01T12:00:01Z").expect("ts");
        let room_id = RoomId::new();
        let update = Event {
            room_id,
            seq: Seq::new(2),
            kind: EventKind::Update {
                id,
                body: Some(MessageBody::parse("b").expect("body")),
                edited: true,
                updated,
            },
        };
        let delete = Event {
            room_id,
            seq: Seq::new(3),
            kind: EventKind::Delete { id },
        };
        let cases = [
            (
                ServerFrame::from_event(&update).to_json(),
                r#"{"type":"chat_message","action":"update","id":"0190a6a0-0000-7000-8000-000000000001","body":"b","edited":true,"updated":"2024-05-01T12:00:01.000000+00:00","seq":2}"#,
            ),
            (
                ServerFrame::from_event(&delete).to_json(),
                r#"{"type":"chat_message","action":"delete","id":"0190a6a0-0000-7000-8000-000000000001","seq":3}"#,
            ),
            (
                ErrorFrame::new(ErrorCode::NotFound, "Message not found.").to_json(),
                r#"{"error":"Message not found.","code":"not_found"}"#,
            ),
            (
                ServerFrame::Event(ChatEvent::Synced { seq: Seq::new(9) }).to_json(),
                r#"{"type":"chat_event","action":"synced","seq":9}"#,
            ),
            (
                ServerFrame::Event(ChatEvent::Read {
                    user: Username::parse("bob").expect("name"),
                    seq: Seq::new(7),
                })
                .to_json(),
                r#"{"type":"chat_event","action":"read","user":"bob","seq":7}"#,
            ),
            (
                ServerFrame::Event(ChatEvent::Activity {
                    room: "alice/club".into(),
                    seq: Seq::new(8),
                    unread: 2,
                })
                .to_json(),
                r#"{"type":"chat_event","action":"activity","room":"alice/club","seq":8,"unread":2}"#,
            ),
            (
                ServerFrame::Event(ChatEvent::Added {
                    room: "alice/club".into(),
                })
                .to_json(),
                r#"{"type":"chat_event","action":"added","room":"alice/club"}"#,
            ),
            (
                ServerFrame::Event(ChatEvent::Removed {
                    room: "alice/club".into(),
                })
                .to_json(),
                r#"{"type":"chat_event","action":"removed","room":"alice/club"}"#,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn every_frame_decodes_back_to_itself() {
        let mut m = sample_message();
        m.client_id = Some(crate::ClientId::parse("k1").expect("valid"));
        let frame = ServerFrame::from_event(&Event {
            room_id: m.room_id,
            seq: Seq::new(5),
            kind: EventKind::New(m),
        });
        assert_eq!(
            Incoming::parse(&frame.to_json()).expect("decodes"),
            Incoming::Frame(frame)
        );
        let err = ErrorFrame::new(ErrorCode::Forbidden, "no").with_client_id(Some("k".into()));
        assert_eq!(
            Incoming::parse(&err.to_json()).expect("decodes"),
            Incoming::Error(err)
        );
        let typing = ServerFrame::Event(ChatEvent::Typing {
            user: Username::parse("bob").expect("name"),
        });
        assert_eq!(
            Incoming::parse(&typing.to_json()).expect("decodes"),
            Incoming::Frame(typing)
        );
    }

    #[test]
    fn error_codes_serialize_as_their_wire_word() {
        for code in [
            ErrorCode::TooLong,
            ErrorCode::Empty,
            ErrorCode::NotFound,
            ErrorCode::Forbidden,
            ErrorCode::BadFrame,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(
                serde_json::to_string(&code).expect("serializes"),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
