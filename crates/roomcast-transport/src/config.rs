//! Transport settings, filled in by the binary (or an embedder).

use std::time::Duration;

/// Which `Origin` headers may open a WebSocket (cross-site WebSocket
/// hijacking defence: a browser sends the cookie whatever page connects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin: only for deployments behind another gate.
    Any,
    /// Exactly these origins, e.g. `http://127.0.0.1:8080`.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request with this `Origin` header may connect. A request
    /// without one (not from a browser) may: it cannot carry a victim's cookie
    /// by accident.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) | (AllowedOrigins::Any, _) => true,
            (AllowedOrigins::List(list), Some(o)) => {
                let o = o.trim_end_matches('/');
                list.iter()
                    .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(o))
            }
        }
    }
}

/// `*`, or the origins separated by commas: for start-up lines and help.
impl std::fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowedOrigins::Any => f.write_str("*"),
            AllowedOrigins::List(list) => f.write_str(&list.join(",")),
        }
    }
}

/// How a graceful shutdown ends each socket (PROTOCOL.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Close frame 1001: well-behaved clients reconnect with `since`.
    #[default]
    Frame,
    /// End the TCP connection without a close frame: the seed client only
    /// reconnects after an unclean close, so this is the mode for fleets of
    /// seed clients.
    Drop,
}

#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub allowed_origins: AllowedOrigins,
    /// Open sockets beyond which handshakes get 503.
    pub max_connections: usize,
    /// Largest client message accepted; a larger one closes with 1009.
    pub max_message_bytes: usize,
    /// Per-socket read and write buffer sizes. Small buffers keep an idle
    /// connection cheap (a few KB instead of axum's 128 KiB default).
    pub socket_buffer_bytes: usize,
    /// Most bytes a socket may have queued for a peer that does not read.
    pub max_write_buffer_bytes: usize,
    /// The kernel send buffer of each accepted connection (`SO_SNDBUF`);
    /// `None` leaves the kernel's autotuning. A small one bounds what a
    /// stalled peer can hold and makes it a slow consumer sooner.
    pub tcp_send_buffer_bytes: Option<usize>,
    /// A write that takes longer than this means the peer stopped reading:
    /// the socket is closed (1013) and the client resumes with `since`.
    pub write_timeout: Duration,
    pub shutdown_mode: ShutdownMode,
    /// How long shutdown waits for sockets to close before giving up.
    pub shutdown_grace: Duration,
    /// Lifetime of an access token from login or refresh (the seed's
    /// settings use 10 minutes).
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token.
    pub refresh_token_ttl: Duration,
    /// Mark the `JWT` cookie `Secure` (behind HTTPS).
    pub secure_cookies: bool,
    /// Largest HTTP request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Origins that may call the HTTP API from a browser (CORS, with
    /// credentials); empty: CORS is off.
    pub cors_origins: Vec<String>,
    /// Per-user message and typing limits (all sockets and HTTP together).
    pub rate_limit: RateLimitConfig,
    /// Sockets one user may have open on this node; beyond, handshakes get
    /// 429. 0: no cap.
    pub max_connections_per_user: usize,
    /// An HTTP connection that does not send a complete request head in
    /// this long is closed: half-open and silent connections, slow headers,
    /// and keep-alive connections idle this long (the same clock runs while
    /// a kept-alive connection waits for its next request).
    pub header_read_timeout: Duration,
    /// An HTTP request (body read and handler) that takes longer than this
    /// is answered 408. WebSocket handshakes finish well within it.
    pub request_timeout: Duration,
    /// Password hashes and checks (argon2, ~19 MiB and tens of ms each) run
    /// at most this many at once.
    pub password_concurrency: usize,
    /// A password check waiting longer than this for its turn is answered
    /// 503 with `Retry-After`; so is one arriving when as many are already
    /// waiting as can run in this time.
    pub password_queue_timeout: Duration,
    /// A socket the peer has sent nothing on for this long gets a ping.
    pub ping_interval: Duration,
    /// A peer silent this long after a ping (no pong, no frame) is gone:
    /// its connection is dropped, freeing its slot and memory.
    pub ping_timeout: Duration,
    /// Whether the public listener serves `/metrics`. False when the
    /// embedder serves them on a listener of their own
    /// ([`crate::serve_metrics`], the binary's `--metrics-bind`), so the
    /// public one does not tell the world its internals.
    pub public_metrics: bool,
}

/// Per-user rate limits (PROTOCOL.md `rate_limited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Messages (posts, edits, deletes, bad frames; socket and HTTP) one
    /// user may send per second, sustained. 0 turns every per-user limit
    /// off, typing's included (benchmarks, protocol checks).
    pub per_second: u32,
    /// Messages one user may send at once before the rate applies.
    pub burst: u32,
    /// Typing events relayed per user: at most one per this interval (the
    /// rest are dropped silently). Zero: not limited.
    pub typing_interval: Duration,
    /// A socket whose frames are refused at twice the rate or more for this
    /// long is closed with 1008. Zero: never.
    pub abuse_after: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 10,
            burst: 20,
            typing_interval: Duration::from_secs(2),
            abuse_after: Duration::from_secs(10),
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            allowed_origins: AllowedOrigins::List(Vec::new()),
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            socket_buffer_bytes: 1024,
            max_write_buffer_bytes: 256 * 1024,
            tcp_send_buffer_bytes: None,
            write_timeout: Duration::from_secs(10),
            shutdown_mode: ShutdownMode::Frame,
            shutdown_grace: Duration::from_secs(10),
            access_token_ttl: Duration::from_secs(10 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            secure_cookies: false,
            max_body_bytes: 64 * 1024,
            rate_limit: RateLimitConfig::default(),
            max_connections_per_user: 20,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            password_concurrency: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            password_queue_timeout: Duration::from_secs(5),
            cors_origins: Vec::new(),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            public_metrics: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_matched_exactly_but_for_case_and_a_trailing_slash() {
        let allowed = AllowedOrigins::List(vec!["http://127.0.0.1:8080".into()]);
        let cases = [
            (None, true),
            (Some("http://127.0.0.1:8080"), true),
            (Some("HTTP://127.0.0.1:8080/"), true),
            (Some("http://127.0.0.1:8081"), false),
            (Some("https://127.0.0.1:8080"), false),
            (Some("http://evil.example"), false),
            (Some("null"), false),
        ];
        for (origin, want) in cases {
            assert_eq!(allowed.allows(origin), want, "{origin:?}");
        }
        assert!(AllowedOrigins::Any.allows(Some("http://evil.example")));
    }
}
