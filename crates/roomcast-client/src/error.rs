//! What can go wrong for a client.
//!
//! Every message says why: a wrapped error's whole chain of causes is
//! written into it ("websocket error: IO error: Connection refused (os
//! error 111)"), because the client runs inside other people's services,
//! where a log line is often all there is. The wrapped errors are kept as
//! fields (not as `source()`), so a report that walks the chain does not
//! print each cause twice.

use std::fmt;
use std::time::Duration;

use roomcast_domain::{BodyError, NameError};

/// The error a token provider or another caller-supplied piece may fail
/// with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// The WebSocket URL, a header or the TLS settings cannot be built
    /// from the configuration.
    #[error("invalid connection settings: {0}")]
    Settings(String),
    /// The server refused the handshake or request with this HTTP status
    /// (401, 403 and 404 are not retried: a new token or another room is
    /// needed).
    #[error("refused by the server: HTTP {status}{}", detail(message))]
    Refused { status: u16, message: String },
    /// The server closed the socket with 1008 (membership revoked, token
    /// expired without a token provider to renew it): not retried without
    /// re-authenticating.
    #[error("closed by the server by policy: {0}")]
    Policy(String),
    /// The handshake did not complete in time.
    #[error("connecting to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    /// A socket error (connection refused, reset, TLS, protocol error).
    #[error("websocket error: {}", Chain(&**.0))]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// An HTTP request (log in, refresh) failed before an answer came.
    #[error("HTTP request failed: {}", Chain(.0))]
    Http(reqwest::Error),
    /// The token provider failed to give a token.
    #[error("token provider failed: {}", Chain(&**.0))]
    Token(BoxError),
    /// The socket was lost (the server went away, closed it, or the
    /// network failed): the client reconnects by itself.
    #[error("connection lost: {0}")]
    Lost(String),
    /// `update`/`delete` while the client is between connections: unlike a
    /// `send`, an edit is not queued (the seed composable returns `false`).
    #[error("not connected")]
    NotConnected,
    /// The reconnection attempts configured ran out.
    #[error("gave up after {attempts} connection attempts; the last failed: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<ClientError>,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Http(e)
    }
}

impl ClientError {
    /// Whether trying again later cannot help.
    pub fn is_fatal(&self) -> bool {
        use tokio_tungstenite::tungstenite::Error as Ws;
        match self {
            ClientError::Refused { status, .. } => matches!(status, 401 | 403 | 404),
            // A URL the client cannot open (`wss://` without TLS, another
            // scheme) or a certificate it does not trust: the same every
            // time.
            ClientError::WebSocket(e) => match &**e {
                Ws::Url(_) | Ws::Tls(_) => true,
                Ws::Io(io) => untrusted_certificate(io),
                _ => false,
            },
            ClientError::Body(_)
            | ClientError::Room(_)
            | ClientError::Settings(_)
            | ClientError::Policy(_)
            | ClientError::GaveUp { .. }
            | ClientError::Closed => true,
            ClientError::Timeout { .. }
            | ClientError::Http(_)
            | ClientError::Token(_)
            | ClientError::Lost(_)
            | ClientError::NotConnected => false,
        }
    }
}

/// Whether a TLS handshake failed on the server's certificate (tokio-rustls
/// reports rustls's errors as I/O errors).
fn untrusted_certificate(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
}

/// `: {message}`, or nothing for an empty message.
fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// An error followed by each of its causes, `: `-separated, skipping a
/// cause whose text the previous one already ends with (several libraries
/// write their source into their own message).
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio_tungstenite::tungstenite;

    use super::*;

    #[test]
    fn refusals_that_a_retry_cannot_fix_are_fatal() {
        let refused = |status| ClientError::Refused {
            status,
            message: String::new(),
        };
        let ws = |e: tungstenite::Error| ClientError::from(e);
        let timeout = ClientError::Timeout {
            url: "ws://x".into(),
            after: Duration::from_secs(1),
        };
        for (err, fatal) in [
            (refused(401), true),
            (refused(403), true),
            (refused(404), true),
            (refused(503), false),
            (refused(502), false),
            (timeout, false),
            (ClientError::Policy("Token expired.".into()), true),
            (
                ws(tungstenite::Error::Io(
                    io::ErrorKind::ConnectionRefused.into(),
                )),
                false,
            ),
            (
                ws(tungstenite::Error::Url(
                    tungstenite::error::UrlError::TlsFeatureNotEnabled,
                )),
                true,
            ),
            (
                ws(tungstenite::Error::Tls(
                    tungstenite::error::TlsError::InvalidDnsName,
                )),
                true,
            ),
            (
                ws(tungstenite::Error::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                ))),
                true,
            ),
        ] {
            assert_eq!(err.is_fatal(), fatal, "{err}");
        }
    }

    /// An error with a cause of its own, as reqwest's and hyper's are.
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] io::Error);

    #[test]
    fn every_message_carries_its_causes() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let cases: Vec<(ClientError, &str)> = vec![
            (
                tungstenite::Error::Io(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))
                .into(),
                "websocket error: IO error: connection refused",
            ),
            (
                tungstenite::Error::Tls(tungstenite::error::TlsError::InvalidDnsName).into(),
                "websocket error: TLS error: Invalid DNS name",
            ),
            (
                ClientError::Token(Box::new(Outer(refused))),
                "token provider failed: error sending request: connection refused",
            ),
            (
                ClientError::Refused {
                    status: 401,
                    message: "Invalid token.".into(),
                },
                "refused by the server: HTTP 401: Invalid token.",
            ),
            (
                ClientError::Refused {
                    status: 502,
                    message: String::new(),
                },
                "refused by the server: HTTP 502",
            ),
            (
                ClientError::GaveUp {
                    attempts: 3,
                    last: Box::new(ClientError::Timeout {
                        url: "wss://chat.example/ws/chat/a/b".into(),
                        after: Duration::from_secs(10),
                    }),
                },
                "gave up after 3 connection attempts; the last failed: \
                 connecting to wss://chat.example/ws/chat/a/b timed out after 10s",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn a_cause_already_in_its_parents_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("request failed: connection refused")]
        struct Repeats(#[source] io::Error);
        let err = ClientError::Token(Box::new(Repeats(io::Error::other("connection refused"))));
        assert_eq!(
            err.to_string(),
            "token provider failed: request failed: connection refused"
        );
    }
}
