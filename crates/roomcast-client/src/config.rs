//! Where and as whom a client connects.

use std::time::Duration;

use roomcast_domain::{RoomSlug, Seq, Username};
use rustls::pki_types::CertificateDer;

use crate::{Backoff, ClientError, TokenProvider};

/// How the client proves who it is (PROTOCOL.md section 1).
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Cookie: {name}={token}`, as the seed's browser client sends it.
    Cookie { name: String, token: String },
    /// `Authorization: Bearer {token}`, for services.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Cookie { name, .. } => write!(f, "Cookie({name}=***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Auth {
    /// The same kind of credential with another token.
    pub(crate) fn with_token(&self, token: String) -> Auth {
        match self {
            Auth::Cookie { name, .. } => Auth::Cookie {
                name: name.clone(),
                token,
            },
            Auth::Bearer(_) => Auth::Bearer(token),
        }
    }

    pub(crate) fn token(&self) -> &str {
        match self {
            Auth::Cookie { token, .. } | Auth::Bearer(token) => token,
        }
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws/chat` (the fixture's `ws_base`).
    /// `ws://host:port/ws/chat`, or `wss://` (TLS, see
    /// [`extra_roots`](Self::extra_roots)).
    pub ws_base: String,
    pub host: Username,
    pub slug: RoomSlug,
    /// The credential's kind and first token (with a token provider, an
    /// empty token: the provider gives the first one).
    pub auth: Auth,
    /// Renews the token before it expires and after the server closed the
    /// socket because it had (1008 "Token expired."); `None`: the token in
    /// `auth` is used until it is refused, which stops the client.
    pub token_provider: Option<TokenProvider>,
    /// How long before a token's expiry (its JWT `exp`) the provider is
    /// asked for the next one (at most a quarter of the token's life).
    pub renew_before: Duration,
    /// Root certificates trusted for `wss://` besides the public ones
    /// compiled in (Mozilla's, from `webpki-roots`): a private CA, a
    /// self-signed server.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Sent as `Origin` when set (a server checks it only when present).
    pub origin: Option<String>,
    /// The seq the client has already seen: 0 (the default) replays the
    /// whole room, so the message list starts complete.
    pub since: Seq,
    pub backoff: Backoff,
    /// Give up after this many failed attempts in a row; `None`: never.
    pub max_attempts: Option<u32>,
    /// How long one handshake may take.
    pub connect_timeout: Duration,
    /// Events buffered for each subscriber that does not keep up; beyond
    /// it, the subscriber gets [`ClientEvent::Lagged`](crate::ClientEvent::Lagged).
    pub event_capacity: usize,
}

impl ClientConfig {
    /// Settings for room `{host}/{slug}` under `ws_base`, with defaults.
    pub fn new(ws_base: &str, host: &str, slug: &str, auth: Auth) -> Result<Self, ClientError> {
        Ok(Self {
            ws_base: ws_base.trim_end_matches('/').to_owned(),
            host: Username::parse(host)?,
            slug: RoomSlug::parse(slug)?,
            auth,
            token_provider: None,
            renew_before: Duration::from_secs(30),
            extra_roots: Vec::new(),
            origin: None,
            since: Seq::ZERO,
            backoff: Backoff::default(),
            max_attempts: None,
            connect_timeout: Duration::from_secs(10),
            event_capacity: 1024,
        })
    }

    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Renews tokens with `provider` (see [`TokenProvider`]).
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Self {
        self.token_provider = Some(provider);
        self
    }

    /// Trusts these root certificates too (see
    /// [`certificates_from_pem`](crate::certificates_from_pem)).
    pub fn with_root_certificates(
        mut self,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Self {
        self.extra_roots.extend(roots);
        self
    }

    /// The URL of the room's socket, resuming after `since`.
    pub(crate) fn url(&self, since: Seq) -> String {
        format!(
            "{}/{}/{}?since={since}",
            self.ws_base,
            self.host.as_str(),
            self.slug.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_room_and_the_resume_point_and_tokens_stay_hidden() {
        let auth = Auth::Bearer("secret-token".into());
        let config = ClientConfig::new("ws://127.0.0.1:9/ws/chat/", "user-0", "room-0", auth)
            .expect("valid");
        assert_eq!(
            config.url(Seq::new(42)),
            "ws://127.0.0.1:9/ws/chat/user-0/room-0?since=42"
        );
        assert!(!format!("{config:?}").contains("secret-token"));
        let bad = ClientConfig::new("ws://x", "User 0", "room-0", Auth::Bearer(String::new()));
        assert!(matches!(bad, Err(ClientError::Room(_))));
    }
}
