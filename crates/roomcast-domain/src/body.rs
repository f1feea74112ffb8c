//! What a user may post: a message body, and the client's idempotency key.

use std::fmt;

/// The seed's `Message.body` `max_length`.
pub const MAX_BODY_CHARS: usize = 500;
/// PROTOCOL.md: a `clientId` is 1 to 64 characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// Why a body was refused. The messages are the seed's sentences, sent to
/// clients as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("Message cannot be empty.")]
    Empty,
    #[error("Message exceeds {MAX_BODY_CHARS} characters.")]
    TooLong,
}

/// A message body: trimmed, 1 to 500 characters counted in Unicode scalar
/// values (the seed counts Python characters, which are the same thing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    pub fn parse(raw: &str) -> Result<Self, BodyError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(BodyError::Empty);
        }
        // Byte length bounds the char count from above: skip the count when
        // the body is short enough in bytes.
        if trimmed.len() > MAX_BODY_CHARS && trimmed.chars().count() > MAX_BODY_CHARS {
            return Err(BodyError::TooLong);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `clientId` that is empty or longer than 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clientId must be 1 to {MAX_CLIENT_ID_CHARS} characters")]
pub struct ClientIdError;

/// The client's idempotency key for a `text` frame: unique per user and room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: impl Into<String>) -> Result<Self, ClientIdError> {
        let raw = raw.into();
        let n = raw.chars().count();
        if n == 0 || n > MAX_CLIENT_ID_CHARS {
            return Err(ClientIdError);
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limits_count_characters_after_trimming() {
        let cases: Vec<(String, Result<String, BodyError>)> = vec![
            ("hi".into(), Ok("hi".into())),
            ("  hi \n".into(), Ok("hi".into())),
            ("".into(), Err(BodyError::Empty)),
            (" \t\n ".into(), Err(BodyError::Empty)),
            ("a".repeat(500), Ok("a".repeat(500))),
            ("a".repeat(501), Err(BodyError::TooLong)),
            // 500 four-byte characters: 2000 bytes but within the limit.
            ("😀".repeat(500), Ok("😀".repeat(500))),
            ("😀".repeat(501), Err(BodyError::TooLong)),
            (format!("  {}  ", "é".repeat(500)), Ok("é".repeat(500))),
        ];
        for (input, want) in cases {
            let got = MessageBody::parse(&input).map(MessageBody::into_string);
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn body_errors_use_the_seed_sentences() {
        assert_eq!(
            BodyError::TooLong.to_string(),
            "Message exceeds 500 characters."
        );
    }

    #[test]
    fn client_id_is_one_to_sixty_four_characters() {
        assert!(ClientId::parse("a").is_ok());
        assert!(ClientId::parse("é".repeat(64)).is_ok());
        assert_eq!(ClientId::parse(""), Err(ClientIdError));
        assert_eq!(ClientId::parse("a".repeat(65)), Err(ClientIdError));
    }
}
