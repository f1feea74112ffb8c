//! The ceiling to compare with: a trivial fan-out server that speaks the
//! seed protocol and nothing more. One thread, rooms in memory, no storage,
//! no token or origin check, no ordering or resume. Each frame a member
//! sends becomes one seed `new` event, serialized once and broadcast to the
//! room. Issue 7 quotes such a server (about 90,000 deliveries/s at p99
//! 25 ms on this machine); running it beside Roomcast in the same session
//! turns a noisy machine's absolute numbers into ratios.
//!
//! `cargo xtask bench ... --setup trivial` starts it as a child process
//! (`xtask trivial-server`), which prints its fixture on the first line of
//! stdout and then serves.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Slots per room channel, as Roomcast's hub.
const ROOM_CAPACITY: usize = 256;

type Rooms = Arc<HashMap<String, broadcast::Sender<Utf8Bytes>>>;

/// `xtask trivial-server --rooms M --members K`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = super::Opts::parse(args)?;
    let rooms: usize = opts.get("rooms", 50)?;
    let members: usize = opts.get("members", 10)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(rooms, members))
}

async fn serve(rooms: usize, members: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut channels = HashMap::new();
    let mut fixture_rooms = Vec::new();
    for r in 0..rooms {
        let (host, slug) = (format!("user-{r}"), format!("room-{r}"));
        channels.insert(
            format!("/ws/chat/{host}/{slug}"),
            broadcast::channel(ROOM_CAPACITY).0,
        );
        let members: Vec<Value> = (0..members)
            .map(|m| {
                let name = format!("u{r}-{m}");
                json!({"username": name, "user_id": name, "token": name})
            })
            .collect();
        fixture_rooms.push(json!({"host": host, "slug": slug, "members": members}));
    }
    let fixture = json!({
        "name": "trivial",
        "ws_base": format!("ws://{addr}/ws/chat"),
        "cookie_name": "JWT",
        "origin": format!("http://{addr}"),
        "rooms": fixture_rooms,
    });
    // One line: the bench reads it, then connects.
    println!("{fixture}");
    let rooms: Rooms = Arc::new(channels);
    loop {
        let (stream, _) = listener.accept().await?;
        let rooms = rooms.clone();
        tokio::spawn(async move {
            if let Err(e) = member(stream, rooms).await {
                eprintln!("trivial-server: {e:#}");
            }
        });
    }
}

/// One socket: its frames go to the room, the room's frames come back.
// tungstenite fixes the handshake callback's error type.
#[allow(clippy::result_large_err)]
async fn member(stream: TcpStream, rooms: Rooms) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| {
            path = request.uri().path().trim_end_matches('/').to_owned();
            Ok(response)
        },
        Some(config),
    )
    .await?;
    let tx = rooms
        .get(&path)
        .with_context(|| format!("no room at {path}"))?
        .clone();
    let mut feed = tx.subscribe();
    let (mut sink, mut stream) = ws.split();
    let user = path.rsplit('/').next().unwrap_or_default().to_owned();
    loop {
        tokio::select! {
            frame = feed.recv() => match frame {
                Ok(frame) => sink.send(Message::Text(frame)).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(sent) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    let body = sent["message"].as_str().unwrap_or_default();
                    let frame = json!({
                        "type": "chat_message", "action": "new",
                        "id": uuid::Uuid::new_v4().to_string(), "user": user,
                        "user_id": user, "body": body, "created": "2024-01-01T00:00:00+00:00",
                        "edited": false, "updated": "2024-01-01T00:00:00+00:00", "userAvatar": null,
                    });
                    let _ = tx.send(Utf8Bytes::from(frame.to_string()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(()),
            },
        }
    }
}
