//! Frames a client sends: `text`, `update`, `delete` (seed), `typing` and
//! `read` (ext).

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::ErrorCode;
use crate::{BodyError, ClientId, MessageBody, MessageId, Seq};

/// A client frame, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Post a new message.
    Text {
        body: MessageBody,
        client_id: Option<ClientId>,
    },
    /// Edit one's own message.
    Update { id: MessageId, body: MessageBody },
    /// Delete one's own message.
    Delete { id: MessageId },
    /// "I am typing": ephemeral, never stored.
    Typing,
    /// "I have read the room up to `seq`": stored per participant.
    Read { seq: Seq },
}

/// Why a client frame was refused; becomes an error frame to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, not an object, unknown type, a missing or ill-typed field.
    #[error("Invalid frame: {0}.")]
    Malformed(String),
    /// The body is empty or too long (the seed's sentences).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A `text` frame's `clientId` (kept so the error can echo it).
    #[error("Invalid frame: clientId must be 1 to 64 characters.")]
    ClientId,
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Malformed(_) | FrameError::ClientId => ErrorCode::BadFrame,
            FrameError::Body(BodyError::Empty) => ErrorCode::Empty,
            FrameError::Body(BodyError::TooLong) => ErrorCode::TooLong,
        }
    }
}

/// Every field any frame may carry; which ones are required depends on `type`.
#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    /// The `read` frame's position.
    seq: Option<Seq>,
    /// Accepted and ignored: the server's clock is authoritative.
    #[serde(rename = "timestamp")]
    _timestamp: Option<IgnoredAny>,
}

impl ClientFrame {
    /// Parses one text frame. The result of a `text` frame whose body is bad
    /// still carries the `clientId` through [`ClientFrame::client_id_of`].
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let raw: RawFrame = serde_json::from_str(text).map_err(|e| {
            let detail = if e.is_syntax() || e.is_eof() {
                "not valid JSON".to_owned()
            } else {
                // serde_json's data errors name the field and the expected
                // type, without echoing the client's input.
                strip_position(&e.to_string())
            };
            FrameError::Malformed(detail)
        })?;
        match raw.kind.as_deref().unwrap_or("text") {
            "text" => {
                let client_id = match raw.client_id {
                    Some(c) => Some(ClientId::parse(c).map_err(|_| FrameError::ClientId)?),
                    None => None,
                };
                let body = MessageBody::parse(&required(raw.message, "message")?)?;
                Ok(ClientFrame::Text { body, client_id })
            }
            "update" => {
                let id = message_id(raw.message_id)?;
                let body = MessageBody::parse(&required(raw.message, "message")?)?;
                Ok(ClientFrame::Update { id, body })
            }
            "delete" => Ok(ClientFrame::Delete {
                id: message_id(raw.message_id)?,
            }),
            "typing" => Ok(ClientFrame::Typing),
            "read" => Ok(ClientFrame::Read {
                seq: raw
                    .seq
                    .ok_or_else(|| FrameError::Malformed("missing field `seq`".to_owned()))?,
            }),
            other => Err(FrameError::Malformed(format!(
                "unknown type {:?}",
                truncate(other, 32)
            ))),
        }
    }

    /// The `clientId` of a frame that failed validation, so that the error
    /// frame can carry it back to the sender's pending message.
    pub fn client_id_of(text: &str) -> Option<String> {
        Self::ids_of(text).client_id
    }

    /// The valid `clientId` and `messageId` of a frame, if it has them,
    /// whether or not the rest of it parses.
    pub fn ids_of(text: &str) -> super::FrameIds {
        #[derive(Deserialize)]
        struct Only {
            #[serde(rename = "clientId")]
            client_id: Option<serde_json::Value>,
            #[serde(rename = "messageId")]
            message_id: Option<serde_json::Value>,
        }
        let Ok(only) = serde_json::from_str::<Only>(text) else {
            return super::FrameIds::default();
        };
        let string = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        super::FrameIds {
            client_id: string(only.client_id).filter(|c| ClientId::parse(c.as_str()).is_ok()),
            message_id: string(only.message_id).filter(|m| MessageId::parse(m).is_ok()),
        }
    }
}

fn required(field: Option<String>, name: &str) -> Result<String, FrameError> {
    field.ok_or_else(|| FrameError::Malformed(format!("missing field `{name}`")))
}

fn message_id(field: Option<String>) -> Result<MessageId, FrameError> {
    let raw = required(field, "messageId")?;
    MessageId::parse(&raw)
        .map_err(|_| FrameError::Malformed("`messageId` is not a valid id".to_owned()))
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> MessageBody {
        MessageBody::parse(s).expect("valid body")
    }

    const ID: &str = "0190a6a0-0000-7000-8000-000000000001";

    #[test]
    fn client_frames_parse_as_the_seed_sends_them() {
        let id = MessageId::parse(ID).expect("valid id");
        let cases = [
            (
                r#"{"type":"text","message":"hi","timestamp":"2024-01-01T00:00:00Z"}"#,
                ClientFrame::Text {
                    body: body("hi"),
                    client_id: None,
                },
            ),
            (
                r#"{"message":" hi "}"#,
                ClientFrame::Text {
                    body: body("hi"),
                    client_id: None,
                },
            ),
            (
                r#"{"type":"text","message":"hi","clientId":"c-1"}"#,
                ClientFrame::Text {
                    body: body("hi"),
                    client_id: Some(ClientId::parse("c-1").expect("valid")),
                },
            ),
            (
                &format!(r#"{{"type":"update","messageId":"{ID}","message":"new","timestamp":1}}"#),
                ClientFrame::Update {
                    id,
                    body: body("new"),
                },
            ),
            (
                &format!(r#"{{"type":"delete","messageId":"{ID}"}}"#),
                ClientFrame::Delete { id },
            ),
            (r#"{"type":"typing"}"#, ClientFrame::Typing),
            (
                r#"{"type":"read","seq":42}"#,
                ClientFrame::Read { seq: Seq::new(42) },
            ),
            (
                r#"{"type":null,"message":"x","extra":[1,2]}"#,
                ClientFrame::Text {
                    body: body("x"),
                    client_id: None,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ClientFrame::parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_client_frames_get_a_code() {
        let long = format!(r#"{{"message":"{}"}}"#, "a".repeat(501));
        let cases = [
            ("not json", ErrorCode::BadFrame),
            ("", ErrorCode::BadFrame),
            ("42", ErrorCode::BadFrame),
            (r#"["text"]"#, ErrorCode::BadFrame),
            (r#"{"type":"shout","message":"x"}"#, ErrorCode::BadFrame),
            (r#"{"type":"text"}"#, ErrorCode::BadFrame),
            (r#"{"type":"text","message":5}"#, ErrorCode::BadFrame),
            (r#"{"type":"update","message":"x"}"#, ErrorCode::BadFrame),
            (
                r#"{"type":"update","messageId":"nope","message":"x"}"#,
                ErrorCode::BadFrame,
            ),
            (r#"{"type":"delete","messageId":7}"#, ErrorCode::BadFrame),
            (r#"{"type":"read"}"#, ErrorCode::BadFrame),
            (r#"{"type":"read","seq":-1}"#, ErrorCode::BadFrame),
            (r#"{"type":"read","seq":"7"}"#, ErrorCode::BadFrame),
            (
                r#"{"type":"text","message":"x","clientId":""}"#,
                ErrorCode::BadFrame,
            ),
            (r#"{"type":"text","message":"   "}"#, ErrorCode::Empty),
            (&long, ErrorCode::TooLong),
        ];
        for (input, code) in cases {
            let err = ClientFrame::parse(input).expect_err(input);
            assert_eq!(err.code(), code, "{input}");
        }
    }

    #[test]
    fn too_long_uses_the_seed_sentence() {
        let long = format!(r#"{{"message":"{}"}}"#, "a".repeat(501));
        let err = ClientFrame::parse(&long).expect_err("too long");
        assert_eq!(err.to_string(), "Message exceeds 500 characters.");
    }

    #[test]
    fn ids_are_read_from_frames_that_do_not_parse() {
        let id = uuid::Uuid::new_v4().to_string();
        let cases = [
            (
                format!(r#"{{"type":"update","messageId":"{id}"}}"#),
                None,
                Some(id.clone()),
            ),
            (
                r#"{"type":"text","clientId":"c1","message":""}"#.to_owned(),
                Some("c1".to_owned()),
                None,
            ),
            (
                r#"{"messageId":"not an id","clientId":7}"#.to_owned(),
                None,
                None,
            ),
            ("not json".to_owned(), None, None),
        ];
        for (text, client_id, message_id) in cases {
            let ids = ClientFrame::ids_of(&text);
            assert_eq!(
                (ids.client_id, ids.message_id),
                (client_id, message_id),
                "{text}"
            );
        }
    }

    #[test]
    fn client_id_survives_a_failed_frame() {
        assert_eq!(
            ClientFrame::client_id_of(r#"{"message":"","clientId":"k"}"#).as_deref(),
            Some("k")
        );
        assert_eq!(ClientFrame::client_id_of("garbage"), None);
    }
}
