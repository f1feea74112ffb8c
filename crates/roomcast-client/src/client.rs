//! The client handle and the task that owns its socket.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

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
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::messages::{Applied, MessageList};
use crate::{Auth, ClientConfig, ClientError, tls, token};

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

    /// The next event if one is already waiting, without waiting.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(ClientEvent::Lagged(n)),
            Err(_) => None,
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
            auth: config.auth.clone(),
            expires: token::expiry(config.auth.token()),
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
    /// The socket was lost (why): reconnect after a backoff.
    Lost(ClientError),
    /// The token is expiring or expired: renew it and reconnect at once.
    Renew,
    /// The user closed the client; `clean`: the server answered the close.
    Closed { clean: bool },
    /// Retrying cannot help.
    Fatal(ClientError),
}

/// How one connection attempt ended.
enum Attempt {
    Connected(Box<Socket>),
    Failed(ClientError),
    /// The user closed the client meanwhile.
    Closed,
}

/// What the server says when it closes a socket whose token expired.
const TOKEN_EXPIRED: &str = "Token expired.";

struct Task {
    config: ClientConfig,
    /// The credential in use (its token replaced by each renewal).
    auth: Auth,
    /// When the token in `auth` expires, if it says.
    expires: Option<SystemTime>,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Mutex<Shared>>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<ClientEvent>,
}

impl Task {
    /// Runs until closed or failed; true when the last socket closed cleanly.
    async fn run(mut self) -> bool {
        // The TLS settings of every `wss://` handshake.
        let tls = match tls::client_config(&self.config.extra_roots) {
            Ok(tls) => tls,
            Err(e) => {
                self.set_status(Status::Failed(Arc::new(e)));
                return true;
            }
        };
        let mut failures = 0u32;
        let mut clean = true;
        let mut renew = false;
        let end = loop {
            let error = match self.attempt(renew, &tls).await {
                Attempt::Connected(socket) => {
                    failures = 0;
                    self.set_status(Status::Connected);
                    match self.session(*socket).await {
                        SessionEnd::Lost(e) => e,
                        SessionEnd::Renew => {
                            renew = true;
                            self.set_status(Status::Reconnecting {
                                attempt: 0,
                                delay: Duration::ZERO,
                            });
                            continue;
                        }
                        SessionEnd::Closed { clean: answered } => {
                            clean = answered;
                            break Status::Closed;
                        }
                        SessionEnd::Fatal(e) => e,
                    }
                }
                Attempt::Failed(e) => e,
                Attempt::Closed => break Status::Closed,
            };
            renew = false;
            if error.is_fatal() {
                break Status::Failed(Arc::new(error));
            }
            tracing::debug!(error = %error, "connection attempt failed");
            failures += 1;
            if self.config.max_attempts.is_some_and(|max| failures > max) {
                break Status::Failed(Arc::new(ClientError::GaveUp {
                    attempts: failures - 1,
                    last: Box::new(error),
                }));
            }
            let delay = self.config.backoff.delay(failures, rand::random::<f64>());
            self.set_status(Status::Reconnecting {
                attempt: failures,
                delay,
            });
            if answering(&mut self.commands, tokio::time::sleep(delay))
                .await
                .is_none()
            {
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

    /// One connection: a new token first if `renew` or the current one is
    /// due, then the handshake, resuming after the last seq applied. A
    /// token refused (401) that was not fresh is renewed and tried once
    /// more (it may have expired on the way).
    async fn attempt(&mut self, mut renew: bool, tls: &Arc<rustls::ClientConfig>) -> Attempt {
        let mut fresh = false;
        loop {
            if let Some(provider) = self.config.token_provider.clone()
                && (renew || self.token_due())
            {
                match answering(&mut self.commands, provider.token()).await {
                    None => return Attempt::Closed,
                    Some(Err(e)) => return Attempt::Failed(e),
                    Some(Ok(token)) => {
                        self.expires = token::expiry(&token);
                        self.auth = self.auth.with_token(token);
                        fresh = true;
                    }
                }
            }
            let since = lock(&self.shared).list.last_seq();
            let handshake = connect(&self.config, &self.auth, tls, since);
            match answering(&mut self.commands, handshake).await {
                None => return Attempt::Closed,
                Some(Ok(socket)) => return Attempt::Connected(Box::new(socket)),
                Some(Err(ClientError::Refused { status: 401, .. }))
                    if self.config.token_provider.is_some() && !fresh =>
                {
                    renew = true;
                }
                Some(Err(e)) => return Attempt::Failed(e),
            }
        }
    }

    /// Whether the token must be renewed before connecting: none yet, or
    /// due for renewal.
    fn token_due(&self) -> bool {
        self.auth.token().is_empty() || self.renew_in() == Some(Duration::ZERO)
    }

    /// When to renew the token, if there is a provider to ask and the
    /// token says when it expires.
    fn renew_in(&self) -> Option<Duration> {
        self.config.token_provider.as_ref()?;
        let expires = self.expires?;
        Some(token::renew_in(
            SystemTime::now(),
            expires,
            self.config.renew_before,
        ))
    }

    async fn session(&mut self, mut socket: Socket) -> SessionEnd {
        // Sends not yet confirmed go again with their clientId: the server
        // answers one it already stored with the original event.
        let pending = lock(&self.shared).pending.clone();
        for p in &pending {
            if let Err(e) = socket.feed(Message::text(text_frame(p))).await {
                return SessionEnd::Lost(e.into());
            }
        }
        if let Err(e) = socket.flush().await {
            return SessionEnd::Lost(e.into());
        }
        let renewal = self.renew_in();
        let renew = async {
            match renewal {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(renew);
        loop {
            tokio::select! {
                () = &mut renew => {
                    // Leave before the server closes the socket at expiry;
                    // the next connection resumes after the last seq, so
                    // nothing sent meanwhile is lost.
                    tracing::debug!("renewing the access token");
                    let _ = tokio::time::timeout(Duration::from_secs(1), close(&mut socket)).await;
                    return SessionEnd::Renew;
                }
                command = self.commands.recv() => match command {
                    Some(Command::Text(p)) => {
                        if let Err(e) = socket.send(Message::text(text_frame(&p))).await {
                            return SessionEnd::Lost(e.into());
                        }
                    }
                    Some(Command::Edit { frame, done }) => {
                        match socket.send(Message::text(frame)).await {
                            Ok(()) => {
                                let _ = done.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = done.send(Err(ClientError::NotConnected));
                                return SessionEnd::Lost(e.into());
                            }
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
                    Some(Ok(Message::Close(frame))) => return self.closed_by_server(frame),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "socket lost");
                        return SessionEnd::Lost(e.into());
                    }
                    None => {
                        return SessionEnd::Lost(ClientError::Lost(
                            "the connection ended without a close frame".into(),
                        ));
                    }
                },
            }
        }
    }

    /// What the server's close frame means: 1008 "Token expired." renews
    /// the token when a provider can, any other 1008 stops the client,
    /// anything else reconnects.
    fn closed_by_server(&self, frame: Option<CloseFrame>) -> SessionEnd {
        let Some(frame) = frame else {
            return SessionEnd::Lost(ClientError::Lost(
                "the server closed the socket without a code".into(),
            ));
        };
        let reason = frame.reason.to_string();
        match frame.code {
            CloseCode::Policy
                if reason == TOKEN_EXPIRED && self.config.token_provider.is_some() =>
            {
                SessionEnd::Renew
            }
            CloseCode::Policy => SessionEnd::Fatal(ClientError::Policy(reason)),
            code => SessionEnd::Lost(ClientError::Lost(format!(
                "the server closed the socket: {} {reason}",
                u16::from(code)
            ))),
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

/// Runs `work` while there is no socket, answering commands meanwhile;
/// `None` if the client was closed first.
async fn answering<F: std::future::Future>(
    commands: &mut mpsc::Receiver<Command>,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            command = commands.recv() => {
                if !offline(command) {
                    return None;
                }
            }
        }
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

/// One handshake to the room as `auth`, resuming after `since`.
async fn connect(
    config: &ClientConfig,
    auth: &Auth,
    tls: &Arc<rustls::ClientConfig>,
    since: Seq,
) -> Result<Socket, ClientError> {
    let settings = |e: &dyn std::fmt::Display| ClientError::Settings(e.to_string());
    let url = config.url(since);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| settings(&e))?;
    let (name, value) = match auth {
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
    let handshake = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(Connector::Rustls(Arc::clone(tls))),
    );
    match tokio::time::timeout(config.connect_timeout, handshake).await {
        Err(_) => Err(ClientError::Timeout {
            url,
            after: config.connect_timeout,
        }),
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
    use crate::{Backoff, CertificateDer, ClientEvent};

    /// A listener on a free port and a bearer client config for
    /// alice's "room" on it.
    async fn alice_in_room() -> (TcpListener, ClientConfig) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = ClientConfig::new(
            &format!("ws://{addr}/ws/chat"),
            "alice",
            "room",
            Auth::Bearer("t".into()),
        )
        .expect("config");
        (listener, config)
    }

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
        let (listener, config) = alice_in_room().await;
        let config = config.with_backoff(Backoff {
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
        let (listener, config) = alice_in_room().await;
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

    /// Requests as a scripted server saw them: URI and `Authorization`.
    type Seen = StdMutex<Vec<(String, String)>>;

    /// Upgrades any stream (plain or TLS), noting the request.
    #[allow(clippy::result_large_err)]
    async fn upgrade<S>(stream: S, seen: &Seen) -> WebSocketStream<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let callback = |req: &Request, res: Response| {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            seen.lock()
                .expect("lock")
                .push((req.uri().to_string(), auth));
            Ok(res)
        };
        tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .expect("upgrade")
    }

    /// Waits for the client's status to satisfy `want`.
    async fn status(client: &Client, want: impl Fn(&Status) -> bool) -> Status {
        let mut changes = client.status_changes();
        let status = tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|s| want(s)))
            .await
            .expect("status in time")
            .expect("client running");
        status.clone()
    }

    #[tokio::test]
    async fn a_token_expired_close_renews_the_token_and_resumes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let provider = crate::TokenProvider::new(move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { Ok::<_, std::io::Error>(format!("token-{n}")) }
        });
        let config = ClientConfig::new(
            &format!("ws://{addr}/ws/chat"),
            "alice",
            "room",
            Auth::Bearer(String::new()),
        )
        .expect("config")
        .with_token_provider(provider)
        // A backoff longer than the test: only an immediate reconnect passes.
        .with_backoff(Backoff {
            base: Duration::from_secs(600),
            max: Duration::from_secs(600),
        });
        let (client, _events) = Client::connect(config);
        let seen = Seen::default();

        let (tcp, _) = listener.accept().await.expect("accept");
        let mut first = upgrade(tcp, &seen).await;
        first
            .send(Message::text(new_event(1, "before", "other")))
            .await
            .expect("send");
        first
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: TOKEN_EXPIRED.into(),
            })))
            .await
            .expect("close");
        let (tcp, _) = listener.accept().await.expect("accept");
        let _second = upgrade(tcp, &seen).await;
        status(&client, Status::is_connected).await;

        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            [
                (
                    "/ws/chat/alice/room?since=0".into(),
                    "Bearer token-1".into()
                ),
                (
                    "/ws/chat/alice/room?since=1".into(),
                    "Bearer token-2".into()
                ),
            ]
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        client.close().await;
    }

    #[tokio::test]
    async fn without_a_token_provider_a_token_expired_close_stops_the_client() {
        let (listener, config) = alice_in_room().await;
        let (client, _events) = Client::connect(config);
        let seen = Seen::default();
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut socket = upgrade(tcp, &seen).await;
        socket
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: TOKEN_EXPIRED.into(),
            })))
            .await
            .expect("close");
        let end = status(&client, |s| matches!(s, Status::Failed(_))).await;
        let Status::Failed(e) = end else {
            unreachable!()
        };
        assert_eq!(
            e.to_string(),
            "closed by the server by policy: Token expired."
        );
        client.close().await;
    }

    /// A TLS acceptor for `localhost` with a fresh self-signed certificate,
    /// and that certificate (the root a client must trust).
    fn tls_server() -> (tokio_rustls::TlsAcceptor, CertificateDer<'static>) {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let private =
            rustls::pki_types::PrivateKeyDer::try_from(key.key_pair.serialize_der()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], private)
            .expect("server config");
        (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert)
    }

    #[tokio::test]
    async fn wss_connects_to_a_server_whose_root_is_configured() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (acceptor, root) = tls_server();
        let config = ClientConfig::new(
            &format!("wss://localhost:{port}/ws/chat"),
            "alice",
            "room",
            Auth::Bearer("t".into()),
        )
        .expect("config")
        .with_root_certificates([root]);
        let (client, mut events) = Client::connect(config);
        let seen = Seen::default();
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = acceptor.accept(tcp).await.expect("TLS handshake");
        let mut socket = upgrade(tls, &seen).await;
        socket
            .send(Message::text(new_event(1, "over TLS", "c")))
            .await
            .expect("send");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("in time")
                .expect("running");
            if let ClientEvent::Frame(ServerFrame::Message(ChatMessage::New(new))) = event {
                assert_eq!(new.body, "over TLS");
                break;
            }
        }
        let id = client.send("hello").await.expect("send");
        let frame = loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => {
                    break serde_json::from_str::<serde_json::Value>(t.as_str()).expect("json");
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        };
        assert_eq!(frame["clientId"], id.as_str());
        assert_eq!(
            seen.lock().expect("lock")[0].0,
            "/ws/chat/alice/room?since=0"
        );
        client.close().await;
    }

    #[tokio::test]
    async fn wss_to_an_untrusted_certificate_fails_for_good_and_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (acceptor, _root) = tls_server();
        let config = ClientConfig::new(
            &format!("wss://localhost:{port}/ws/chat"),
            "alice",
            "room",
            Auth::Bearer("t".into()),
        )
        .expect("config");
        let (client, _events) = Client::connect(config);
        let (tcp, _) = listener.accept().await.expect("accept");
        assert!(acceptor.accept(tcp).await.is_err(), "the client refuses");
        let end = status(&client, |s| matches!(s, Status::Failed(_))).await;
        let Status::Failed(e) = end else {
            unreachable!()
        };
        let message = e.to_string();
        assert!(
            message.starts_with("websocket error: ") && message.contains("UnknownIssuer"),
            "{message}"
        );
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
