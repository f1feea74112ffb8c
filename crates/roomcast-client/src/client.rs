//! The client handle and the task that owns its socket.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast_domain::wire::{ChatEvent, ChatMessage, ErrorFrame, Incoming, NewFrame, ServerFrame};
use roomcast_domain::{MessageBody, MessageId, Seq, Username};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::messages::{Applied, MessageList};
use crate::{Auth, ClientConfig, ClientError};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the connection stands, like the seed composable's
/// `connectionStatus`.
#[derive(Debug, Clone)]
pub enum Status {
    /// The first handshake is under way.
    Connecting,
    /// The socket is open (a resume replay may still be arriving).
    Connected,
    /// The socket was lost; attempt `attempt` starts after `delay`.
    Reconnecting { attempt: u32, delay: Duration },
    /// Closed by [`Client::close`] (or by dropping the client).
    Closed,
    /// Stopped for good: retrying cannot help (see the error).
    Failed(Arc<ClientError>),
}

impl Status {
    pub fn is_connected(&self) -> bool {
        matches!(self, Status::Connected)
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A frame from the server. Stored events (`chat_message`) come once
    /// each, in `seq` order, across reconnects; ephemeral and control
    /// events (`typing`, `synced`, `reset`) as they arrive.
    Frame(ServerFrame),
    /// An error for this client only (a refused send carries its `clientId`).
    Error(ErrorFrame),
    /// The connection status changed.
    Status(Status),
    /// This subscriber fell behind and missed this many events; the
    /// client's [`messages`](Client::messages) are still complete.
    Lagged(u64),
}

/// A subscription to a client's events.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<ClientEvent>,
}

impl Events {
    /// The next event; `None` once the client was closed or dropped, its
    /// task has ended and every event has been read. (A client that
    /// stopped for good says so first with `Status(Failed)`.)
    pub async fn next(&mut self) -> Option<ClientEvent> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(ClientEvent::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A `send` not yet confirmed by its `new` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSend {
    pub client_id: String,
    pub body: MessageBody,
}

/// What the handle and the task share.
#[derive(Debug, Default)]
struct Shared {
    list: MessageList,
    pending: Vec<PendingSend>,
    /// Who has a socket open in the room: the last `presence` list, kept
    /// up to date by `join`/`leave`; empty while disconnected.
    presence: BTreeSet<Username>,
}

#[derive(Debug)]
enum Command {
    Text(PendingSend),
    Edit {
        frame: String,
        done: oneshot::Sender<Result<(), ClientError>>,
    },
    Close,
}

/// A connection to one room that stays up by itself.
///
/// Cheap to share by reference; its socket lives in a task it owns, which
/// ends on [`close`](Client::close) or when the client is dropped.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    shared: Arc<Mutex<Shared>>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<ClientEvent>,
    task: Option<JoinHandle<bool>>,
}

impl Client {
    /// Starts connecting (in a task) and returns at once, with a first
    /// subscription that sees every event from the start.
    pub fn connect(config: ClientConfig) -> (Client, Events) {
        let (commands, command_rx) = mpsc::channel(256);
        let (events, first) = broadcast::channel(config.event_capacity.max(1));
        let (status_tx, status) = watch::channel(Status::Connecting);
        let shared = Arc::new(Mutex::new(Shared {
            list: MessageList::starting_at(config.since),
            pending: Vec::new(),
            presence: BTreeSet::new(),
        }));
        let task = Task {
            config,
            commands: command_rx,
            shared: Arc::clone(&shared),
            status: status_tx,
            events: events.clone(),
        };
        let client = Client {
            commands,
            shared,
            status,
            events,
            task: Some(tokio::spawn(task.run())),
        };
        (client, Events { rx: first })
    }

    /// Another subscription, from now on.
    pub fn subscribe(&self) -> Events {
        Events {
            rx: self.events.subscribe(),
        }
    }

    /// Posts a message with a fresh `clientId`, which it returns. The send
    /// stays pending until its `new` event arrives, and is sent again with
    /// the same `clientId` after every reconnect until then: the server
    /// stores it once whatever happens.
    pub async fn send(&self, body: &str) -> Result<String, ClientError> {
        let pending = PendingSend {
            client_id: uuid::Uuid::new_v4().simple().to_string(),
            body: MessageBody::parse(body)?,
        };
        let client_id = pending.client_id.clone();
        lock(&self.shared).pending.push(pending.clone());
        self.commands
            .send(Command::Text(pending))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(client_id)
    }

    /// Edits one's own message. Resolves once the frame is written; the
    /// result arrives as an `update` event (or an error event).
    pub async fn update(&self, id: MessageId, body: &str) -> Result<(), ClientError> {
        let body = MessageBody::parse(body)?;
        self.edit(OutFrame::Update {
            message_id: id,
            message: body.as_str(),
            timestamp: now(),
        })
        .await
    }

    /// Deletes one's own message; like [`update`](Client::update).
    pub async fn delete(&self, id: MessageId) -> Result<(), ClientError> {
        self.edit(OutFrame::Delete {
            message_id: id,
            timestamp: now(),
        })
        .await
    }

    async fn edit(&self, frame: OutFrame<'_>) -> Result<(), ClientError> {
        let (done, result) = oneshot::channel();
        let command = Command::Edit {
            frame: frame.to_json(),
            done,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)?;
        result.await.map_err(|_| ClientError::Closed)?
    }

    /// The room's messages as this client knows them, oldest first.
    pub fn messages(&self) -> Vec<NewFrame> {
        lock(&self.shared).list.messages().to_vec()
    }

    /// The last stored event's seq this client has applied.
    pub fn last_seq(&self) -> Seq {
        lock(&self.shared).list.last_seq()
    }

    /// Marks the room read up to `seq` (usually [`last_seq`](Client::last_seq)):
    /// the server stores the position (only forward, clamped to the room's
    /// last seq) and sends the others a read receipt
    /// (`ChatEvent::Read`). Resolves once the frame is written; refused
    /// while disconnected (nothing is lost: send it again once connected).
    pub async fn read(&self, seq: Seq) -> Result<(), ClientError> {
        self.edit(OutFrame::Read { seq }).await
    }

    /// The usernames with a socket open in the room, on any node, as the
    /// server last said (`presence`, then `join`/`leave`), sorted; empty
    /// while disconnected.
    pub fn presence(&self) -> Vec<Username> {
        lock(&self.shared).presence.iter().cloned().collect()
    }

    /// Sends not yet confirmed, oldest first.
    pub fn pending(&self) -> Vec<PendingSend> {
        lock(&self.shared).pending.clone()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A watch on the status, e.g. `status_changes().wait_for(Status::is_connected)`.
    pub fn status_changes(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Closes the socket (close frame 1000), waits for the server's answer
    /// and for the task to end. True when the close was clean: the server
    /// answered the close frame and ended the connection (or no socket was
    /// open); false when it had to be abandoned.
    pub async fn close(mut self) -> bool {
        let _ = self.commands.send(Command::Close).await;
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "client task failed");
                false
            }),
            None => true,
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The lock is never held across an await or a panic-prone call; a
    // poisoned one still holds consistent data.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------ client frames

/// The seed's client frames, as the seed sends them (`timestamp`
/// included), plus `clientId` on `text`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum OutFrame<'a> {
    Text {
        message: &'a str,
        timestamp: String,
        #[serde(rename = "clientId")]
        client_id: &'a str,
    },
    Update {
        #[serde(rename = "messageId")]
        message_id: MessageId,
        message: &'a str,
        timestamp: String,
    },
    Delete {
        #[serde(rename = "messageId")]
        message_id: MessageId,
        timestamp: String,
    },
    Read {
        seq: Seq,
    },
}

impl OutFrame<'_> {
    fn to_json(&self) -> String {
        // Plain strings and ids: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn now() -> String {
    roomcast_domain::Timestamp::now().to_string()
}

fn text_frame(pending: &PendingSend) -> String {
    OutFrame::Text {
        message: pending.body.as_str(),
        timestamp: now(),
        client_id: &pending.client_id,
    }
    .to_json()
}

// ------------------------------------------------------------------ task

/// How a connected session ended.
enum SessionEnd {
    /// The socket was lost: reconnect.
    Lost,
    /// The user closed the client; `clean`: the server answered the close.
    Closed { clean: bool },
    /// Retrying cannot help.
    Fatal(ClientError),
}

struct Task {
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Mutex<Shared>>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<ClientEvent>,
}

impl Task {
    /// Runs until closed or failed; true when the last socket closed cleanly.
    async fn run(mut self) -> bool {
        let mut failures = 0u32;
        let mut clean = true;
        let end = loop {
            let since = lock(&self.shared).list.last_seq();
            let error = match self.handshake(since).await {
                Ok(Some(socket)) => {
                    failures = 0;
                    self.set_status(Status::Connected);
                    match self.session(socket).await {
                        SessionEnd::Lost => None,
                        SessionEnd::Closed { clean: answered } => {
                            clean = answered;
                            break Status::Closed;
                        }
                        SessionEnd::Fatal(e) => Some(e),
                    }
                }
                Ok(None) => break Status::Closed,
                Err(e) => Some(e),
            };
            if let Some(e) = error {
                if e.is_fatal() {
                    break Status::Failed(Arc::new(e));
                }
                tracing::debug!(error = %e, "connection attempt failed");
            }
            failures += 1;
            if self.config.max_attempts.is_some_and(|max| failures > max) {
                break Status::Failed(Arc::new(ClientError::GaveUp(failures - 1)));
            }
            let delay = self.config.backoff.delay(failures, rand::random::<f64>());
            self.set_status(Status::Reconnecting {
                attempt: failures,
                delay,
            });
            if !self.wait(delay).await {
                break Status::Closed;
            }
        };
        self.set_status(end);
        clean
    }

    fn set_status(&self, status: Status) {
        if !status.is_connected() {
            // Who is here is known only while connected; the server says
            // it again after the next handshake.
            lock(&self.shared).presence.clear();
        }
        self.status.send_replace(status.clone());
        let _ = self.events.send(ClientEvent::Status(status));
    }

    /// Connects, while still answering commands; `Ok(None)`: closed meanwhile.
    async fn handshake(&mut self, since: Seq) -> Result<Option<Socket>, ClientError> {
        let connecting = connect(&self.config, since);
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                result = &mut connecting => return result.map(Some),
                command = self.commands.recv() => {
                    if !offline(command) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Sleeps `delay` between attempts, answering commands; false: closed.
    async fn wait(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                command = self.commands.recv() => {
                    if !offline(command) {
                        return false;
                    }
                }
            }
        }
    }

    async fn session(&mut self, mut socket: Socket) -> SessionEnd {
        // Sends not yet confirmed go again with their clientId: the server
        // answers one it already stored with the original event.
        let pending = lock(&self.shared).pending.clone();
        for p in &pending {
            if socket.feed(Message::text(text_frame(p))).await.is_err() {
                return SessionEnd::Lost;
            }
        }
        if socket.flush().await.is_err() {
            return SessionEnd::Lost;
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Text(p)) => {
                        if socket.send(Message::text(text_frame(&p))).await.is_err() {
                            return SessionEnd::Lost;
                        }
                    }
                    Some(Command::Edit { frame, done }) => {
                        let sent = socket.send(Message::text(frame)).await;
                        let lost = sent.is_err();
                        let _ = done.send(sent.map_err(ClientError::from));
                        if lost {
                            return SessionEnd::Lost;
                        }
                    }
                    Some(Command::Close) | None => {
                        let clean = tokio::time::timeout(Duration::from_secs(1), close(&mut socket))
                            .await
                            .unwrap_or(false);
                        return SessionEnd::Closed { clean };
                    }
                },
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => self.receive(text.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        if let Some(f) = frame.filter(|f| f.code == CloseCode::Policy) {
                            return SessionEnd::Fatal(ClientError::Policy(f.reason.to_string()));
                        }
                        return SessionEnd::Lost;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "socket lost");
                        return SessionEnd::Lost;
                    }
                    None => return SessionEnd::Lost,
                },
            }
        }
    }

    /// One frame from the server: update the shared state, then tell
    /// subscribers (stored events only if they were new).
    fn receive(&self, text: &str) {
        let incoming = match Incoming::parse(text) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a frame this client does not know");
                return;
            }
        };
        let event = {
            let mut shared = lock(&self.shared);
            match incoming {
                Incoming::Frame(frame) => {
                    if let ServerFrame::Event(event) = &frame {
                        track_presence(&mut shared.presence, event);
                    }
                    if let ServerFrame::Message(ChatMessage::New(new)) = &frame
                        && let Some(cid) = &new.client_id
                    {
                        shared.pending.retain(|p| &p.client_id != cid);
                    }
                    match shared.list.apply(&frame) {
                        Applied::Stale => None,
                        Applied::Applied | Applied::Reset | Applied::Passed => {
                            Some(ClientEvent::Frame(frame))
                        }
                    }
                }
                Incoming::Error(error) => {
                    if let Some(cid) = &error.client_id {
                        shared.pending.retain(|p| &p.client_id != cid);
                    }
                    Some(ClientEvent::Error(error))
                }
            }
        };
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
    }
}

/// Applies a presence event to the set of who is here.
fn track_presence(presence: &mut BTreeSet<Username>, event: &ChatEvent) {
    match event {
        ChatEvent::Presence { users } => *presence = users.iter().cloned().collect(),
        ChatEvent::Join { user } => {
            presence.insert(user.clone());
        }
        ChatEvent::Leave { user } => {
            presence.remove(user);
        }
        _ => {}
    }
}

/// A command while there is no socket: sends stay pending (they go out on
/// the next connection), edits are refused. False on close.
fn offline(command: Option<Command>) -> bool {
    match command {
        Some(Command::Text(_)) => true,
        Some(Command::Edit { done, .. }) => {
            let _ = done.send(Err(ClientError::NotConnected));
            true
        }
        Some(Command::Close) | None => false,
    }
}

/// Sends close 1000 and reads until the server's answer and the end of the
/// connection (what is still in flight is dropped: the user is leaving).
/// True when the server answered with a close frame.
async fn close(socket: &mut Socket) -> bool {
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if socket.close(Some(normal)).await.is_err() {
        return false;
    }
    let mut answered = false;
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Close(_)) => answered = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    answered
}

/// One handshake to the room, resuming after `since`.
async fn connect(config: &ClientConfig, since: Seq) -> Result<Socket, ClientError> {
    let settings = |e: &dyn std::fmt::Display| ClientError::Settings(e.to_string());
    let mut request = config
        .url(since)
        .into_client_request()
        .map_err(|e| settings(&e))?;
    let (name, value) = match &config.auth {
        Auth::Cookie { name, token } => {
            (HeaderName::from_static("cookie"), format!("{name}={token}"))
        }
        Auth::Bearer(token) => (
            HeaderName::from_static("authorization"),
            format!("Bearer {token}"),
        ),
    };
    let headers = request.headers_mut();
    headers.insert(
        name,
        HeaderValue::from_str(&value).map_err(|e| settings(&e))?,
    );
    if let Some(origin) = &config.origin {
        headers.insert(
            HeaderName::from_static("origin"),
            HeaderValue::from_str(origin).map_err(|e| settings(&e))?,
        );
    }
    match tokio::time::timeout(
        config.connect_timeout,
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Err(_) => Err(ClientError::Timeout),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let message = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorFrame>(b).ok())
                .map(|e| e.error)
                .unwrap_or_default();
            Err(ClientError::Refused {
                status: response.status().as_u16(),
                message,
            })
        }
        Ok(Err(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    use super::*;
    use crate::{Backoff, ClientEvent};

    /// A scripted server: accepts one socket per script step and reports
    /// the request URI it was opened with. (The callback's error type is
    /// tungstenite's HTTP response, large by design.)
    #[allow(clippy::result_large_err)]
    async fn accept(listener: &TcpListener, uris: &StdMutex<Vec<String>>) -> Socket2 {
        let (tcp, _) = listener.accept().await.expect("accept");
        let callback = |req: &Request, res: Response| {
            uris.lock().expect("lock").push(req.uri().to_string());
            Ok(res)
        };
        tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .expect("upgrade")
    }

    type Socket2 = WebSocketStream<TcpStream>;

    async fn next_text(socket: &mut Socket2) -> serde_json::Value {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("json");
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    fn new_event(seq: u64, body: &str, client_id: &str) -> String {
        serde_json::json!({
            "type": "chat_message", "action": "new",
            "id": format!("0190a6a0-0000-7000-8000-{seq:012}"),
            "user": "alice", "user_id": "0190a6a0-0000-7000-8000-0000000000aa",
            "body": body, "created": "2024-05-01T12:00:00.000000+00:00", "edited": false,
            "updated": "2024-05-01T12:00:00.000000+00:00", "userAvatar": null,
            "seq": seq, "clientId": client_id
        })
        .to_string()
    }

    #[tokio::test]
    async fn an_unconfirmed_send_goes_again_with_its_client_id_after_a_drop_and_resumes_after_the_last_seq()
     {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = ClientConfig::new(
            &format!("ws://{addr}/ws/chat"),
            "alice",
            "room",
            Auth::Bearer("t".into()),
        )
        .expect("config")
        .with_backoff(Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        });
        let (client, mut events) = Client::connect(config);
        let uris = StdMutex::new(Vec::new());

        // First connection: one event arrives, then a send the server
        // "stores" but the socket drops before the answer.
        let mut first = accept(&listener, &uris).await;
        first
            .send(Message::text(new_event(1, "earlier", "other")))
            .await
            .expect("send");
        let client_id = client.send("hello").await.expect("send");
        let frame = next_text(&mut first).await;
        assert_eq!(frame["clientId"], client_id.as_str());
        assert_eq!(frame["message"], "hello");
        drop(first);

        // Second connection: resumes after seq 1 and sends the same frame.
        let mut second = accept(&listener, &uris).await;
        let again = next_text(&mut second).await;
        assert_eq!(again["clientId"], client_id.as_str());
        // The server answers a duplicate with the original event; a stale
        // copy of an older event is dropped.
        second
            .send(Message::text(new_event(1, "earlier", "other")))
            .await
            .expect("send");
        second
            .send(Message::text(new_event(2, "hello", &client_id)))
            .await
            .expect("send");

        let mut seqs = Vec::new();
        while seqs.last() != Some(&Seq::new(2)) {
            let event = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("in time")
                .expect("running");
            if let ClientEvent::Frame(frame @ ServerFrame::Message(_)) = event {
                seqs.push(frame.seq().expect("seq"));
            }
        }
        assert_eq!(seqs, [1, 2]);
        assert!(client.pending().is_empty());
        let uris = uris.lock().expect("lock").clone();
        assert_eq!(
            uris,
            ["/ws/chat/alice/room?since=0", "/ws/chat/alice/room?since=1"]
        );
        client.close().await;
    }

    #[tokio::test]
    async fn read_sends_a_read_frame_and_presence_follows_the_servers_events() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = ClientConfig::new(
            &format!("ws://{addr}/ws/chat"),
            "alice",
            "room",
            Auth::Bearer("t".into()),
        )
        .expect("config");
        let (client, mut events) = Client::connect(config);
        let uris = StdMutex::new(Vec::new());
        let mut server = accept(&listener, &uris).await;
        for frame in [
            r#"{"type":"chat_event","action":"presence","users":["alice","bob"]}"#,
            r#"{"type":"chat_event","action":"join","user":"carol"}"#,
            r#"{"type":"chat_event","action":"leave","user":"bob"}"#,
            r#"{"type":"chat_event","action":"read","user":"carol","seq":3}"#,
        ] {
            server.send(Message::text(frame)).await.expect("send");
        }
        // The receipt arrives typed, after the presence events before it.
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("in time")
                .expect("running");
            if let ClientEvent::Frame(ServerFrame::Event(ChatEvent::Read { user, seq })) = event {
                assert_eq!((user.as_str(), seq), ("carol", Seq::new(3)));
                break;
            }
        }
        let names: Vec<String> = client.presence().iter().map(|u| u.to_string()).collect();
        assert_eq!(names, ["alice", "carol"]);

        client.read(Seq::new(7)).await.expect("written");
        let frame = next_text(&mut server).await;
        assert_eq!(frame, serde_json::json!({"type": "read", "seq": 7}));
        drop(server);
        // Disconnected: nobody is known to be here.
        client
            .status_changes()
            .wait_for(|s| !s.is_connected())
            .await
            .expect("status");
        assert!(client.presence().is_empty());
        client.close().await;
    }

    #[test]
    fn client_frames_are_the_seeds_with_a_client_id() {
        let id = MessageId::parse("0190a6a0-0000-7000-8000-000000000001").expect("id");
        let pending = PendingSend {
            client_id: "c1".into(),
            body: MessageBody::parse(" hi ").expect("body"),
        };
        let text: serde_json::Value = serde_json::from_str(&text_frame(&pending)).expect("json");
        assert_eq!(text["type"], "text");
        assert_eq!(text["message"], "hi");
        assert_eq!(text["clientId"], "c1");
        assert!(text["timestamp"].is_string());
        let update = OutFrame::Update {
            message_id: id,
            message: "b",
            timestamp: "t".into(),
        };
        assert_eq!(
            update.to_json(),
            r#"{"type":"update","messageId":"0190a6a0-0000-7000-8000-000000000001","message":"b","timestamp":"t"}"#
        );
        let delete = OutFrame::Delete {
            message_id: id,
            timestamp: "t".into(),
        };
        assert_eq!(
            delete.to_json(),
            r#"{"type":"delete","messageId":"0190a6a0-0000-7000-8000-000000000001","timestamp":"t"}"#
        );
    }
}
