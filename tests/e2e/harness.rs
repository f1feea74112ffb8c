//! `spawn_app()` and a small WebSocket client for the tests.
//!
//! The backend comes from `ROOMCAST_TEST_DATABASE`: unset or `sqlite`, each
//! app keeps an SQLite file in its data directory; `postgres`, each data
//! directory gets a fresh database on the machine's PostgreSQL
//! (`ROOMCAST_TEST_PG_URL`, default 127.0.0.1:5432, user postgres), dropped
//! when the last app using it is dropped. A server restarted on the same data
//! directory reuses that database, as it would reuse the SQLite file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast_app::{CommonArgs, FixtureRoom, ServeArgs, Server};
use roomcast_storage::postgres::TestDatabase;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server on a random port with its own data directory.
pub struct TestApp {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The PostgreSQL URL the server uses; `None`: SQLite in `dir`.
    pub database_url: Option<String>,
    _database: Option<Arc<TestDatabase>>,
    _temp: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    let mut app = spawn_app_in(&dir, Default::default()).await;
    app._temp = Some(temp);
    app
}

/// A server with the per-user limits off, for tests that load one user
/// beyond what the defaults allow (bursts of hundreds of messages).
pub async fn spawn_unlimited_app() -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    let options = Options {
        unlimited: true,
        ..Default::default()
    };
    let mut app = spawn_app_in(&dir, options).await;
    app._temp = Some(temp);
    app
}

/// Options that differ from the defaults in some tests.
#[derive(Default, Clone)]
pub struct Options {
    pub drop_on_shutdown: bool,
    pub max_connections: Option<usize>,
    pub write_timeout_ms: Option<u64>,
    pub tcp_send_buffer: Option<usize>,
    /// A database URL to use as is, whatever `ROOMCAST_TEST_DATABASE` says.
    pub database_url: Option<String>,
    /// Listen on this port instead of a random one (a restart in place).
    pub port: Option<u16>,
    /// Origins allowed to call the HTTP API cross-origin (CORS).
    pub cors_origins: Vec<String>,
    /// Per-user limits off, as benchmarks and protocol checks run: for
    /// tests that load one user beyond what the defaults allow.
    pub unlimited: bool,
}

/// Switches the per-user limits off (`ROOMCAST_RATE_LIMIT=0`,
/// `ROOMCAST_MAX_CONNECTIONS_PER_USER=0`).
pub fn unlimited(args: &mut ServeArgs) {
    args.rate_limit = 0;
    args.max_connections_per_user = 0;
}

/// Which backend the spawned servers use.
fn backend_is_postgres() -> bool {
    match std::env::var("ROOMCAST_TEST_DATABASE") {
        Err(_) => false,
        Ok(v) if v.is_empty() || v == "sqlite" => false,
        Ok(v) if v == "postgres" => true,
        Ok(other) => panic!("ROOMCAST_TEST_DATABASE={other:?}: expected sqlite or postgres"),
    }
}

/// The database of a data directory: the one an earlier app on the same
/// directory still holds, or a fresh one.
async fn database_for(dir: &Path) -> Arc<TestDatabase> {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, Weak<TestDatabase>>>> = OnceLock::new();
    let databases = DATABASES.get_or_init(Default::default);
    let existing = databases
        .lock()
        .expect("database registry")
        .get(dir)
        .and_then(Weak::upgrade);
    if let Some(db) = existing {
        return db;
    }
    let admin = std::env::var("ROOMCAST_TEST_PG_URL")
        .unwrap_or_else(|_| TestDatabase::DEFAULT_ADMIN_URL.into());
    let db = Arc::new(
        TestDatabase::create(&admin)
            .await
            .expect("create a test database (is PostgreSQL up on 127.0.0.1:5432?)"),
    );
    databases
        .lock()
        .expect("database registry")
        .insert(dir.to_path_buf(), Arc::downgrade(&db));
    db
}

pub async fn spawn_app_in(dir: &Path, options: Options) -> TestApp {
    let mut args = ServeArgs::with_data_dir(dir);
    args.common.bind = SocketAddr::from(([127, 0, 0, 1], options.port.unwrap_or(0)));
    let mut database = None;
    if let Some(url) = &options.database_url {
        args.common.database_url = Some(url.clone());
    } else if backend_is_postgres() {
        let db = database_for(dir).await;
        args.common.database_url = Some(db.url().to_owned());
        database = Some(db);
    }
    args.cors_origins = options.cors_origins.clone();
    if options.drop_on_shutdown {
        args.shutdown_mode = roomcast_app::cli::ShutdownModeArg::Drop;
    }
    if let Some(max) = options.max_connections {
        args.max_connections = Some(max);
    }
    if options.unlimited {
        unlimited(&mut args);
    }
    if let Some(ms) = options.write_timeout_ms {
        args.write_timeout_ms = ms;
    }
    args.tcp_send_buffer = options.tcp_send_buffer;
    let server = Server::start(&args).await.expect("server starts");
    let addr = server.addr();
    TestApp {
        server: Some(server),
        addr,
        dir: dir.to_path_buf(),
        database_url: args.common.database_url.clone(),
        _database: database,
        _temp: None,
    }
}

/// A server on `dir` with settings adjusted by `configure`. Several nodes
/// can share one data directory: one database, one JWT secret, so a
/// fixture's tokens work on all of them.
pub async fn spawn_node(dir: &Path, configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let mut args = ServeArgs::with_data_dir(dir);
    args.common.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut database = None;
    if backend_is_postgres() {
        let db = database_for(dir).await;
        args.common.database_url = Some(db.url().to_owned());
        database = Some(db);
    }
    configure(&mut args);
    let server = Server::start(&args).await.expect("server starts");
    let addr = server.addr();
    TestApp {
        server: Some(server),
        addr,
        dir: dir.to_path_buf(),
        database_url: args.common.database_url.clone(),
        _database: database,
        _temp: None,
    }
}

impl TestApp {
    /// The running server (panics after `shutdown`).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn common(&self) -> CommonArgs {
        let mut args = ServeArgs::with_data_dir(&self.dir).common;
        args.bind = self.addr;
        args.database_url = self.database_url.clone();
        args
    }

    /// Seeds rooms with `roomcast fixture`'s own code and returns them.
    pub async fn fixture(&self, rooms: usize, members: usize) -> Vec<FixtureRoom> {
        roomcast_app::fixture(&self.common(), rooms, members)
            .await
            .expect("fixture")
            .rooms
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self, host: &str, slug: &str) -> String {
        format!("ws://{}/ws/chat/{host}/{slug}", self.addr)
    }

    pub fn secret(&self) -> Vec<u8> {
        std::fs::read_to_string(self.dir.join("jwt-secret"))
            .expect("secret file")
            .trim()
            .as_bytes()
            .to_vec()
    }

    /// Connects as a member with the seed's cookie and the server's origin.
    pub async fn connect(&self, room: &FixtureRoom, member: usize) -> Ws {
        self.connect_with(room, member, None).await
    }

    pub async fn connect_with(&self, room: &FixtureRoom, member: usize, since: Option<u64>) -> Ws {
        let mut url = self.ws_url(&room.host, &room.slug);
        if let Some(since) = since {
            url.push_str(&format!("?since={since}"));
        }
        let token = &room.members[member].token;
        Ws::connect(
            &url,
            &[
                ("Cookie", &format!("JWT={token}")),
                ("Origin", &self.origin()),
            ],
        )
        .await
        .expect("handshake accepted")
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A refused handshake: its HTTP status and JSON body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Show `presence`/`join`/`leave` frames (off by default: most tests
    /// are about stored events, and these come and go with other sockets).
    presence: bool,
}

/// A presence frame (PROTOCOL.md section 3), which most tests skip.
fn is_presence(frame: &Value) -> bool {
    frame["type"] == "chat_event"
        && matches!(
            frame["action"].as_str(),
            Some("presence" | "join" | "leave")
        )
}

impl Ws {
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refusal> {
        let mut request = url.into_client_request().expect("valid url");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await {
            Err(_) => panic!("handshake timed out"),
            Ok(Ok((inner, _))) => Ok(Ws {
                inner,
                presence: false,
            }),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refusal { status, body })
            }
            Ok(Err(e)) => panic!("handshake failed: {e}"),
        }
    }

    /// Connects over a socket with a tiny receive buffer, so that a client
    /// that stops reading backs up into the server at once.
    pub async fn connect_with_small_buffer(url: &str, headers: &[(&str, &str)]) -> Ws {
        let mut request = url.into_client_request().expect("valid url");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let host = request.uri().authority().expect("authority").to_string();
        let addr: SocketAddr = host.parse().expect("a socket address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let stream = socket.connect(addr).await.expect("connect");
        let (inner, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
        Ws {
            inner,
            presence: false,
        }
    }

    /// From now on, presence frames are returned like any other.
    pub fn with_presence(mut self) -> Self {
        self.presence = true;
        self
    }

    /// The frame, unless it is one this socket skips.
    fn keep(&self, text: &str) -> Option<Value> {
        let frame: Value = serde_json::from_str(text).expect("server frames are JSON");
        (self.presence || !is_presence(&frame)).then_some(frame)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.inner.send(Message::text(text)).await.expect("send");
    }

    /// Sends every frame with one flush at the end: a burst in one write.
    pub async fn send_batch(&mut self, frames: impl IntoIterator<Item = Message>) {
        for frame in frames {
            self.inner.feed(frame).await.expect("send");
        }
        self.inner.flush().await.expect("send");
    }

    pub async fn send(&mut self, message: Message) {
        self.inner.send(message).await.expect("send");
    }

    /// The next text frame as JSON; panics on close, error or timeout.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.inner.next()).await;
            match next {
                Err(_) => panic!("no frame within {PATIENCE:?}"),
                Ok(None) => panic!("socket ended"),
                Ok(Some(Err(e))) => panic!("socket failed: {e}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Some(frame) = self.keep(t.as_str()) {
                        return frame;
                    }
                }
                Ok(Some(Ok(Message::Close(c)))) => panic!("socket closed: {c:?}"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next text frame, or `Err(close code)` when the socket ends.
    pub async fn next_frame_or_close(&mut self) -> Result<Value, Option<u16>> {
        loop {
            match tokio::time::timeout(PATIENCE, self.inner.next()).await {
                Err(_) => panic!("no frame within {PATIENCE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Err(None),
                Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| u16::from(f.code))),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Some(frame) = self.keep(t.as_str()) {
                        return Ok(frame);
                    }
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next text frame as JSON, or `None` if none comes within `wait`;
    /// panics on close or error.
    pub async fn try_next_json(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("socket ended"),
                Ok(Some(Err(e))) => panic!("socket failed: {e}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Some(frame) = self.keep(t.as_str()) {
                        return Some(frame);
                    }
                }
                Ok(Some(Ok(Message::Close(c)))) => panic!("socket closed: {c:?}"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Frames until the close frame; returns its code, or `None` when the
    /// connection ended without one. Panics if it stays open.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(PATIENCE, self.inner.next()).await {
                Err(_) => panic!("still open after {PATIENCE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map(|f: CloseFrame| u16::from(f.code));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Sends a close frame with `code`, then reads to the end: the code of
    /// the close frame that came back (if any) and whether the connection
    /// then ended cleanly (the server closed TCP, no error, no timeout).
    pub async fn close_with(&mut self, code: u16) -> (Option<u16>, bool) {
        let frame = CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        };
        self.inner.close(Some(frame)).await.expect("close sent");
        let mut answer = None;
        loop {
            match tokio::time::timeout(PATIENCE, self.inner.next()).await {
                Err(_) => return (answer, false),
                Ok(None) => return (answer, true),
                Ok(Some(Err(_))) => return (answer, false),
                Ok(Some(Ok(Message::Close(frame)))) => answer = frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Asserts no frame arrives for a little while.
    pub async fn quiet_for(&mut self, wait: Duration) {
        if let Some(frame) = self.try_next_json(wait).await {
            panic!("expected silence, got {frame}");
        }
    }
}

/// Posts a text frame and returns the `new` event the sender gets back.
pub async fn post(ws: &mut Ws, body: &str) -> Value {
    ws.send_json(
        serde_json::json!({"type": "text", "message": body, "timestamp": "2024-01-01T00:00:00Z"}),
    )
    .await;
    let event = ws.next_json().await;
    assert_eq!(event["action"], "new", "{event}");
    event
}
