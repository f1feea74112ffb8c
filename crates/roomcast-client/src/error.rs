//! What can go wrong for a client.

use roomcast_domain::{BodyError, NameError};

/// Errors of the client: bad input is refused before anything is sent;
/// connection failures are retried by the client itself and only surface
/// here (and as [`Status::Failed`](crate::Status::Failed)) when retrying
/// cannot help.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The message body is empty or too long (the seed's sentences).
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The room's host or slug is not a valid name.
    #[error("invalid room address: {0}")]
    Room(#[from] NameError),
    /// The WebSocket URL or a header cannot be built from the settings.
    #[error("invalid connection settings: {0}")]
    Settings(String),
    /// The server refused the handshake with this HTTP status (401, 403
    /// and 404 are not retried: a new token or another room is needed).
    #[error("handshake refused: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// The server closed the socket with 1008 (membership revoked, token
    /// expired): not retried without re-authenticating.
    #[error("closed by the server by policy: {0}")]
    Policy(String),
    /// The handshake did not complete in time.
    #[error("connection timed out")]
    Timeout,
    /// A socket error (connection refused, reset, protocol error).
    #[error("websocket error")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// `update`/`delete` while the client is between connections: unlike a
    /// `send`, an edit is not queued (the seed composable returns `false`).
    #[error("not connected")]
    NotConnected,
    /// The reconnection attempts configured ran out.
    #[error("gave up after {0} connection attempts")]
    GaveUp(u32),
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

impl ClientError {
    /// Whether trying again later cannot help.
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::Refused { status, .. } => matches!(status, 401 | 403 | 404),
            ClientError::Body(_)
            | ClientError::Room(_)
            | ClientError::Settings(_)
            | ClientError::Policy(_)
            | ClientError::GaveUp(_)
            | ClientError::Closed => true,
            ClientError::Timeout | ClientError::WebSocket(_) | ClientError::NotConnected => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_a_retry_cannot_fix_are_fatal() {
        let refused = |status| ClientError::Refused {
            status,
            message: String::new(),
        };
        for (err, fatal) in [
            (refused(401), true),
            (refused(403), true),
            (refused(404), true),
            (refused(503), false),
            (refused(502), false),
            (ClientError::Timeout, false),
            (ClientError::Policy("Token expired.".into()), true),
        ] {
            assert_eq!(err.is_fatal(), fatal, "{err}");
        }
    }
}
