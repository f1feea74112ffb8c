//! Lean WebSocket plumbing for the load tool: seed frames only, bodies that
//! carry their own identity, and just enough parsing to measure.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::server::{Endpoint, Fixture, FixtureMember, FixtureRoom};

pub type Ws = WebSocketStream<TcpStream>;

/// Source addresses spread over 127.0.0.1..=127.0.0.16 so that tens of
/// thousands of sockets (and their TIME_WAITs after a storm) do not run
/// out of ephemeral ports on one address pair.
const SOURCES: u32 = 16;

/// Opens one member's socket, optionally resuming with `?since=` (ext).
pub async fn connect(
    fixture: &Fixture,
    node: &Endpoint,
    room: &FixtureRoom,
    member: &FixtureMember,
    since: Option<u64>,
    spread: u32,
) -> anyhow::Result<Ws> {
    let request = request(fixture, node, room, Some(member), since)?;
    let stream = tcp(node, spread, None).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    match tokio::time::timeout(Duration::from_secs(30), handshake).await {
        Err(_) => bail!("handshake timed out"),
        Ok(Err(e)) => Err(e).context("handshake"),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

/// The handshake request of a room's socket: as `member` (its cookie), or
/// anonymous with `None`.
pub fn request(
    fixture: &Fixture,
    node: &Endpoint,
    room: &FixtureRoom,
    member: Option<&FixtureMember>,
    since: Option<u64>,
) -> anyhow::Result<Request> {
    let mut url = format!("{}/{}/{}", node.ws_base, room.host, room.slug);
    if let Some(since) = since {
        url.push_str(&format!("?since={since}"));
    }
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    if let Some(member) = member {
        headers.insert(
            "cookie",
            HeaderValue::from_str(&format!("{}={}", fixture.cookie_name, member.token))?,
        );
    }
    headers.insert("origin", HeaderValue::from_str(&fixture.origin)?);
    Ok(request)
}

/// A TCP connection to `node`, from one of the [`SOURCES`] addresses, with
/// a receive buffer of `recv_buffer` bytes if asked (a reader too slow for
/// the server fills a small one at once).
pub async fn tcp(
    node: &Endpoint,
    spread: u32,
    recv_buffer: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let addr = node.addr;
    let socket = TcpSocket::new_v4()?;
    if addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        let last = 1 + (spread % SOURCES) as u8;
        socket.bind(SocketAddr::from(([127, 0, 0, last], 0)))?;
    }
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The seed's `text` frame, with a body that says which run, room and
/// message it is and when it was (scheduled to be) sent, in nanoseconds
/// since the bench's clock started. Built once per message.
pub fn text_frame(tag: &str, room: usize, key: u64, t_ns: u64) -> String {
    format!(
        r#"{{"type":"text","message":"{tag} {room} {key} {t_ns}","timestamp":"2024-01-01T00:00:00Z"}}"#
    )
}

/// What the load tool reads from a server frame: seed fields, plus `seq`
/// (ext) when the server sends it.
#[derive(Debug, Deserialize)]
pub struct Seen<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub body: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
}

impl Seen<'_> {
    pub fn parse(text: &str) -> Option<Seen<'_>> {
        serde_json::from_str(text).ok()
    }

    /// A bench body of run `tag`: `(room, key, t_ns)`.
    pub fn bench_body(&self, tag: &str) -> Option<(usize, u64, u64)> {
        let body = self.body.as_deref()?;
        let mut parts = body.split(' ');
        if parts.next()? != tag {
            return None;
        }
        let room = parts.next()?.parse().ok()?;
        let key = parts.next()?.parse().ok()?;
        let t = parts.next()?.parse().ok()?;
        Some((room, key, t))
    }

    pub fn is_new(&self) -> bool {
        self.action.as_deref() == Some("new")
    }

    /// `synced` (ext): a resume's replay is complete.
    pub fn is_synced(&self) -> bool {
        self.action.as_deref() == Some("synced")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_body_round_trips_through_a_server_frame() {
        let frame = text_frame("f1", 7, 42, 123_456);
        let sent: serde_json::Value = serde_json::from_str(&frame).expect("json");
        let echoed = serde_json::json!({
            "type": "chat_message", "action": "new", "id": "x", "user": "u",
            "body": sent["message"], "seq": 9, "userAvatar": null
        })
        .to_string();
        let seen = Seen::parse(&echoed).expect("parses");
        assert!(seen.is_new());
        assert_eq!(seen.seq, Some(9));
        assert_eq!(seen.bench_body("f1"), Some((7, 42, 123_456)));
        assert_eq!(seen.bench_body("f2"), None);
        let seed_peer = r#"{"type":"chat_message","action":"new","body":"f1 1 2 3"}"#;
        assert_eq!(Seen::parse(seed_peer).expect("parses").seq, None);
        let synced = Seen::parse(r#"{"type":"chat_event","action":"synced","seq":4}"#);
        assert!(synced.expect("parses").is_synced());
    }
}
