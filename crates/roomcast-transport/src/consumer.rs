//! The chat consumer: one per WebSocket, the seed's `ChatConsumer`.
//!
//! Two halves run side by side in the socket's task. The reader parses
//! client frames and writes to storage; each stored event is published to
//! the room (sender included) only after its commit. The writer sends what
//! the room's feed delivers, in `seq` order and exactly once: it remembers
//! the last seq it sent, skips anything at or below it, and fetches from
//! storage anything it would otherwise skip over. The same rule serves
//! resume (`?since=N`): start at N, catch up from storage, then go live.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use roomcast_broadcast::{Envelope, FeedError, RoomFeed};
use roomcast_domain::wire::{ChatEvent, ClientFrame, ErrorCode, ErrorFrame, ServerFrame};
use roomcast_domain::{Event, Room, Seq, User};
use roomcast_storage::{NewMessage, StorageError, WriteOp, WriteOutcome};

use crate::backfill::encode_event;
use crate::limits::Abuse;
use crate::replies::{self, ReplyReceiver, ReplySender};
use crate::state::ConnectionSlot;
use crate::{AppState, ShutdownMode, chat, metrics, reads};

/// Who is connected where, decided by the handshake.
#[derive(Debug)]
pub(crate) struct Session {
    pub user: User,
    pub room: Room,
    pub since: Option<Seq>,
    pub expires: Option<time::OffsetDateTime>,
    /// The login session, watched so a logout closes the socket (1008).
    pub login: Option<roomcast_domain::RefreshFamily>,
    pub slot: ConnectionSlot,
    /// The room's feed, joined before the handshake was answered.
    pub feed: RoomFeed,
    /// The room's seq when the feed was joined: the socket sends every
    /// event after it (or after `since`).
    pub current: Seq,
    /// With `since`: the oldest seq still in the room's log, read with
    /// `current`. A client behind it cannot resume and must reload.
    pub first_kept: Seq,
}

/// PROTOCOL.md section 5.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN: u16 = 1013;
}

/// Events fetched from storage per round trip when catching up.
const CATCH_UP_PAGE: u32 = 500;
/// Frames written before one flush, so a burst costs one syscall.
const WRITE_BATCH: usize = 64;

/// From the reader to the writer.
#[derive(Debug)]
enum Outgoing {
    /// A frame for this socket only (errors, a duplicate's original event).
    Frame(Utf8Bytes),
    /// Close with this code.
    Close(u16, &'static str),
    /// The client closed: answer its close frame and end the connection.
    Answer(Option<CloseFrame>),
}

/// Why the writer stopped.
enum End {
    Close(u16, &'static str),
    /// The client sent this close frame: send it back, then end TCP.
    Answer(Option<CloseFrame>),
    /// The peer is gone or the reader finished: nothing more to say.
    Quiet,
    /// Shutdown in `drop` mode: end TCP without a close frame.
    Drop,
}

pub(crate) async fn run(
    app: AppState,
    mut sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    mut session: Box<Session>,
) {
    // Fields are borrowed, never moved out, while the socket lives: moved
    // fields would be stored again in this future, for every connection.
    let s = &mut *session;
    crate::access::socket_opened(&s.user, &s.room);
    let opened = Instant::now();
    metrics::connection_opened();
    // Replay what `since` asks for before reading any client frame, so the
    // client's own new messages come after the replay.
    let mut started = Box::pin(start(&app, s, &mut sink)).await;
    // Live from here: the socket counts as present (a `join` for the
    // others if it is the user's first) and gets the presence list.
    if started.is_ok() {
        let presence = app
            .hub()
            .arrive(&mut s.feed, s.user.id, &s.user.username)
            .await;
        if let Envelope::Ephemeral { frame, .. } = presence
            && let Err(end) = send_now(&mut sink, utf8(frame)).await
        {
            started = Err(end);
        }
    }
    let (out_tx, out_rx) = replies::queue(32);
    let reader = read_loop(&app, &s.user, &s.room, stream, out_tx);
    let watch = s.login.map(|login| app.sessions().watch(login));
    let ending = Ending {
        expires: s.expires,
        login: watch.as_ref(),
    };
    let writer = write_loop(
        &app,
        &s.user,
        &s.room,
        started,
        ending,
        &mut s.feed,
        out_rx,
        sink,
    );
    // The writer ends the session: when it stops, the reader is dropped.
    let (code, reason) = tokio::select! {
        ended = writer => ended,
        never = reader_then_wait(reader) => match never {},
    };
    let Session {
        user,
        room,
        feed,
        slot,
        ..
    } = *session;
    app.hub().leave(feed).await;
    // The connection counts against the limit until here.
    drop(slot);
    metrics::connection_closed();
    crate::access::socket_closed(&user, &room, code, &reason, opened.elapsed());
}

/// The reader finishing does not end the session by itself: it tells the
/// writer (by dropping its sender), which closes properly. So this future
/// never completes.
async fn reader_then_wait(reader: impl Future<Output = ()>) -> std::convert::Infallible {
    reader.await;
    std::future::pending().await
}

// ---------------------------------------------------------------- reader

/// A write this socket has queued and not yet answered.
struct InFlight {
    queued: chat::Queued,
    what: WriteKind,
}

/// What a queued write was, to word its refusal.
enum WriteKind {
    Post { client_id: Option<String> },
    Edit,
    Delete,
}

/// What the reader does with a client frame.
enum Handled {
    /// Answer the sender now (or say nothing).
    Reply(Option<Utf8Bytes>),
    /// Refused by the user's rate limit: nothing stored or relayed; answer
    /// the sender (or, for typing, say nothing).
    Limited(Option<Utf8Bytes>),
    /// Queue a write; its answer comes when it has committed.
    Write(WriteOp, WriteKind),
}

async fn read_loop(
    app: &AppState,
    user: &User,
    room: &Room,
    mut stream: SplitStream<WebSocket>,
    out: ReplySender<Outgoing>,
) {
    let mut abuse = Abuse::new(&app.config().rate_limit);
    // Answered in the order queued. Empty (and unallocated) while idle.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        let message = tokio::select! {
            biased;
            answer = first_answer(&mut in_flight) => {
                if let Some(frame) = answer
                    && out.send(Outgoing::Frame(frame)).await.is_err()
                {
                    return;
                }
                continue;
            }
            // A socket with its writes all in flight reads no further, so
            // TCP pushes back on a client that sends faster than we store.
            message = stream.next(), if in_flight.len() < MAX_WRITES_IN_FLIGHT => message,
        };
        let Some(message) = message else { break };
        let handled = match message {
            // Boxed: the handling state lives on the heap only while a frame
            // is being handled, so an idle socket's task stays small.
            Ok(Message::Text(text)) => Box::pin(handle_text(app, user, room, text.as_str())).await,
            Ok(Message::Binary(_)) => over_limit(app, user, None).unwrap_or_else(|| {
                Handled::Reply(Some(error_frame(ErrorFrame::new(
                    ErrorCode::BadFrame,
                    "Invalid frame: binary frames are not supported.",
                ))))
            }),
            Ok(Message::Ping(_) | Message::Pong(_)) => Handled::Reply(None),
            // The client is done: its close is answered at once (after a
            // close frame nothing else may be sent), and the writes it had
            // in flight still commit and reach the room.
            Ok(Message::Close(frame)) => {
                let _ = out.send(Outgoing::Answer(frame)).await;
                return;
            }
            Err(e) => {
                let too_big = matches!(
                    std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<tungstenite::Error>()),
                    Some(tungstenite::Error::Capacity(_))
                );
                if too_big {
                    answer_all(&mut in_flight, &out).await;
                    let _ = out
                        .send(Outgoing::Close(close::TOO_BIG, "Message too big."))
                        .await;
                    return;
                } else {
                    tracing::debug!(error = %e, "socket read failed");
                }
                break;
            }
        };
        let reply = match handled {
            Handled::Reply(reply) => reply,
            Handled::Limited(reply) => {
                if abuse.refused(Instant::now()) {
                    tracing::info!(user = %user.username, "socket closed for flooding past its rate limit");
                    answer_all(&mut in_flight, &out).await;
                    let _ = out
                        .send(Outgoing::Close(close::POLICY, "Too many messages."))
                        .await;
                    return;
                }
                reply
            }
            Handled::Write(op, what) => match Box::pin(chat::queue(app, op)).await {
                Ok(queued) => {
                    in_flight.push_back(InFlight { queued, what });
                    None
                }
                Err(e) => Some(error_frame(refusal(e, &what))),
            },
        };
        if let Some(frame) = reply
            && out.send(Outgoing::Frame(frame)).await.is_err()
        {
            return;
        }
    }
    // The client is done sending: what it sent is still answered before
    // the writer is told to close.
    answer_all(&mut in_flight, &out).await;
}

/// Writes one socket may have queued and unanswered at once.
const MAX_WRITES_IN_FLIGHT: usize = 32;

/// The answer to the oldest write in flight, once it has committed (never
/// resolves while nothing is in flight).
async fn first_answer(in_flight: &mut VecDeque<InFlight>) -> Option<Utf8Bytes> {
    let Some(first) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let outcome = chat::outcome_of(&mut first.queued).await;
    let what = in_flight.pop_front().map(|f| f.what)?;
    answer(outcome, &what)
}

async fn answer_all(in_flight: &mut VecDeque<InFlight>, out: &ReplySender<Outgoing>) {
    while !in_flight.is_empty() {
        if let Some(frame) = first_answer(in_flight).await
            && out.send(Outgoing::Frame(frame)).await.is_err()
        {
            return;
        }
    }
}

/// What to tell the sender about its committed (or refused) write.
fn answer(outcome: Result<WriteOutcome, StorageError>, what: &WriteKind) -> Option<Utf8Bytes> {
    match outcome {
        // Broadcast when first stored; the retrying sender gets the
        // original event again, nobody else sees it twice.
        Ok(WriteOutcome::Posted(posted)) if posted.duplicate => {
            Some(utf8(encode_frame(&posted.event)))
        }
        Ok(_) => None,
        Err(e) => Some(error_frame(refusal(e, what))),
    }
}

fn refusal(e: StorageError, what: &WriteKind) -> ErrorFrame {
    match (what, e) {
        (WriteKind::Post { client_id }, e) => {
            storage_error(e, "post").with_client_id(client_id.clone())
        }
        (WriteKind::Edit, StorageError::Forbidden) => {
            ErrorFrame::new(ErrorCode::Forbidden, "You can only edit your own messages.")
        }
        (WriteKind::Edit, e) => storage_error(e, "edit"),
        (WriteKind::Delete, StorageError::Forbidden) => ErrorFrame::new(
            ErrorCode::Forbidden,
            "You can only delete your own messages.",
        ),
        (WriteKind::Delete, e) => storage_error(e, "delete"),
    }
}

/// Handles one client frame: a write to queue, or what to tell the sender.
async fn handle_text(app: &AppState, user: &User, room: &Room, text: &str) -> Handled {
    let frame = match ClientFrame::parse(text) {
        Ok(ClientFrame::Typing) if !app.limits().typing(user.id) => {
            metrics::rate_limited("typing");
            return Handled::Limited(None);
        }
        Ok(ClientFrame::Typing) => ClientFrame::Typing,
        Ok(frame) => {
            let client_id = match &frame {
                ClientFrame::Text { client_id, .. } => {
                    client_id.as_ref().map(|c| c.as_str().to_owned())
                }
                _ => None,
            };
            if let Some(limited) = over_limit(app, user, client_id) {
                return limited;
            }
            frame
        }
        Err(e) => {
            // Garbage counts against the limit too: each earns a reply.
            if let Some(limited) = over_limit(app, user, ClientFrame::client_id_of(text)) {
                return limited;
            }
            let err = ErrorFrame::new(e.code(), e.to_string());
            return Handled::Reply(Some(error_frame(
                err.with_client_id(ClientFrame::client_id_of(text)),
            )));
        }
    };
    match frame {
        ClientFrame::Text { body, client_id } => {
            let what = WriteKind::Post {
                client_id: client_id.as_ref().map(|c| c.as_str().to_owned()),
            };
            let new = NewMessage {
                room_id: room.id,
                author: user.clone(),
                body,
                client_id,
            };
            Handled::Write(WriteOp::Post(new), what)
        }
        ClientFrame::Update { id, body } => Handled::Write(
            WriteOp::Edit {
                room: room.id,
                author: user.id,
                id,
                body,
            },
            WriteKind::Edit,
        ),
        ClientFrame::Delete { id } => Handled::Write(
            WriteOp::Delete {
                room: room.id,
                author: user.id,
                id,
            },
            WriteKind::Delete,
        ),
        ClientFrame::Typing => {
            let frame = ServerFrame::Event(ChatEvent::Typing {
                user: user.username.clone(),
            });
            let envelope = Envelope::Ephemeral {
                frame: Bytes::from(frame.to_json()),
                from: Some(user.id),
            };
            if let Err(e) = app.hub().publish(room.id, envelope).await {
                tracing::debug!(error = %e, "typing not relayed to other nodes");
            }
            Handled::Reply(None)
        }
        ClientFrame::Read { seq } => match reads::mark_read(app, room, user, seq).await {
            Ok(_) => Handled::Reply(None),
            Err(StorageError::NotFound) => Handled::Reply(Some(error_frame(ErrorFrame::new(
                ErrorCode::Forbidden,
                "You are not a participant of this room.",
            )))),
            Err(e) => Handled::Reply(Some(error_frame(storage_error(e, "read")))),
        },
    }
}

/// Takes one message from the user's budget (shared by their sockets and
/// HTTP posts); `Some` refusal when it is spent.
fn over_limit(app: &AppState, user: &User, client_id: Option<String>) -> Option<Handled> {
    let wait = app.limits().message(user.id).err()?;
    metrics::rate_limited("message");
    let wait = wait.as_millis().max(1);
    let err = ErrorFrame::new(
        ErrorCode::RateLimited,
        format!("Too many messages; wait {wait} ms. Nothing was stored."),
    );
    Some(Handled::Limited(Some(error_frame(
        err.with_client_id(client_id),
    ))))
}

fn encode_frame(event: &Event) -> Bytes {
    match encode_event(event) {
        Envelope::Event { frame, .. } => frame,
        _ => Bytes::new(),
    }
}

fn storage_error(e: StorageError, what: &str) -> ErrorFrame {
    match e {
        StorageError::NotFound => ErrorFrame::new(ErrorCode::NotFound, "Message not found."),
        StorageError::Forbidden => ErrorFrame::new(ErrorCode::Forbidden, "Not allowed."),
        other => {
            tracing::error!(error = %other, source = ?std::error::Error::source(&other), what, "storage write failed");
            ErrorFrame::new(
                ErrorCode::Unavailable,
                "Storage is unavailable; nothing was stored. Try again.",
            )
        }
    }
}

fn error_frame(frame: ErrorFrame) -> Utf8Bytes {
    if let Some(code) = frame.code {
        metrics::send_error(code.as_str());
    }
    Utf8Bytes::from(frame.to_json())
}

fn utf8(bytes: Bytes) -> Utf8Bytes {
    // Frames are serialized from Rust strings, so this never fails; an
    // invalid one would be dropped rather than sent.
    Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static("{}"))
}

// ---------------------------------------------------------------- writer

/// Sends the room's events and the reader's replies until the session ends.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    app: &AppState,
    user: &User,
    room: &Room,
    started: Result<Seq, End>,
    ending: Ending<'_>,
    feed: &mut RoomFeed,
    mut out: ReplyReceiver<Outgoing>,
    mut sink: SplitSink<WebSocket, Message>,
) -> (Option<u16>, String) {
    let end = match started {
        Ok(last) => {
            let mut writer = Writer {
                app,
                room,
                sink: &mut sink,
                last,
                pending: 0,
            };
            writer.live(user, ending, feed, &mut out).await
        }
        Err(end) => end,
    };
    // What the access log says of the close: its code and reason.
    match end {
        End::Close(code, reason) => {
            let _ = tokio::time::timeout(
                app.config().write_timeout,
                send_close(&mut sink, code, reason),
            )
            .await;
            (Some(code), reason.to_owned())
        }
        End::Answer(frame) => {
            let said = frame.as_ref().map(|f| (Some(f.code), f.reason.to_string()));
            let _ =
                tokio::time::timeout(app.config().write_timeout, answer_close(&mut sink, frame))
                    .await;
            said.unwrap_or((None, "closed by the client".to_owned()))
        }
        End::Quiet => {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            (None, "connection lost".to_owned())
        }
        End::Drop => (None, "dropped at shutdown".to_owned()),
    }
}

/// Where the socket starts: the room's current seq, or after `since` with
/// everything since replayed from storage and `synced` sent.
async fn start(
    app: &AppState,
    session: &Session,
    sink: &mut SplitSink<WebSocket, Message>,
) -> Result<Seq, End> {
    let (room, current) = (&session.room, session.current);
    let Some(since) = session.since else {
        return Ok(current);
    };
    if since > current || since.next() < session.first_kept {
        // A position this room never had (another server, a reset log), or
        // one older than the kept log: the client reloads over HTTP.
        let reset = ServerFrame::Event(ChatEvent::Reset { seq: current });
        send_now(sink, Utf8Bytes::from(reset.to_json())).await?;
        return Ok(current);
    }
    let mut writer = Writer {
        app,
        room,
        sink,
        last: since,
        pending: 0,
    };
    // Up to `current` from storage (nothing to fetch when the client is
    // already there, as most are in a reconnect storm); what came after
    // is in the feed, joined before `current` was read.
    writer.catch_up(current).await?;
    let synced = ServerFrame::Event(ChatEvent::Synced { seq: writer.last });
    writer.push(Utf8Bytes::from(synced.to_json())).await?;
    writer.flush().await?;
    Ok(writer.last)
}

async fn send_now(sink: &mut SplitSink<WebSocket, Message>, frame: Utf8Bytes) -> Result<(), End> {
    sink.send(Message::Text(frame))
        .await
        .map_err(|_| End::Quiet)
}

async fn send_close(
    sink: &mut SplitSink<WebSocket, Message>,
    code: u16,
    reason: &'static str,
) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    })))
    .await
}

/// Answers a client's close frame with the same code and ends the
/// connection, so the client sees a clean close (PROTOCOL.md section 5).
/// tungstenite has already queued the echo when it read the client's frame
/// (and refuses a second close): the flush sends it, and closing the sink
/// lets the socket's drop end TCP.
async fn answer_close(sink: &mut SplitSink<WebSocket, Message>, frame: Option<CloseFrame>) {
    let _ = sink.send(Message::Close(frame)).await;
    let _ = sink.flush().await;
    let _ = sink.close().await;
}

struct Writer<'a> {
    app: &'a AppState,
    room: &'a Room,
    sink: &'a mut SplitSink<WebSocket, Message>,
    /// The last seq this socket has sent (or, before live, its start).
    last: Seq,
    /// Frames fed but not yet flushed.
    pending: usize,
}

impl Writer<'_> {
    async fn live(
        &mut self,
        user: &User,
        ending: Ending<'_>,
        feed: &mut RoomFeed,
        out: &mut ReplyReceiver<Outgoing>,
    ) -> End {
        // A child token, waited on through one pinned future: polling the
        // server's own token locks its mutex (and re-registers a waiter)
        // on every wake of every socket, one lock all sockets contend for.
        let shutdown = self.app.shutdown_token().child_token();
        let shutting_down = shutdown.cancelled();
        let expiry = ending.wait();
        tokio::pin!(shutting_down, expiry);
        loop {
            let step = tokio::select! {
                biased;
                () = &mut shutting_down => Err(match self.app.config().shutdown_mode {
                    ShutdownMode::Frame => End::Close(close::GOING_AWAY, "Server shutting down."),
                    ShutdownMode::Drop => End::Drop,
                }),
                reason = &mut expiry => Err(End::Close(close::POLICY, reason)),
                reply = out.recv() => match reply {
                    Some(Outgoing::Frame(frame)) => self.push(frame).await,
                    Some(Outgoing::Close(code, reason)) => Err(End::Close(code, reason)),
                    Some(Outgoing::Answer(frame)) => Err(End::Answer(frame)),
                    None => Err(End::Close(close::NORMAL, "")),
                },
                received = feed.recv() => self.deliver(user, received).await,
            };
            let step = match step {
                Ok(()) => self.drain(user, feed).await,
                Err(end) => Err(end),
            };
            if let Err(end) = step {
                return end;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
        }
    }

    /// Sends whatever else the feed has ready, up to a batch, before one flush.
    async fn drain(&mut self, user: &User, feed: &mut RoomFeed) -> Result<(), End> {
        while self.pending < WRITE_BATCH {
            match feed.try_recv() {
                Ok(Some(envelope)) => self.deliver(user, Ok(envelope)).await?,
                Ok(None) => break,
                Err(e) => return self.deliver(user, Err(e)).await,
            }
        }
        Ok(())
    }

    async fn deliver(
        &mut self,
        user: &User,
        received: Result<Envelope, FeedError>,
    ) -> Result<(), End> {
        match received {
            Ok(Envelope::Event { seq, frame }) => {
                if seq <= self.last {
                    return Ok(()); // already sent (replay, or a duplicate)
                }
                if seq > self.last.next() {
                    Box::pin(self.catch_up(seq.prev())).await?;
                }
                self.push(utf8(frame)).await?;
                self.last = seq;
                metrics::events_delivered(1);
                Ok(())
            }
            Ok(Envelope::Ephemeral { frame, .. }) => self.push(utf8(frame)).await,
            // The hub turns presence news into `join`/`leave` frames.
            Ok(Envelope::Presence(_)) => Ok(()),
            Ok(Envelope::Evict { user: evicted }) if evicted == user.id => {
                Err(End::Close(close::POLICY, "Membership revoked."))
            }
            Ok(Envelope::Evict { .. }) => Ok(()),
            Err(FeedError::Lagged(missed)) => {
                tracing::info!(missed, user = %user.username, "slow consumer closed");
                metrics::slow_consumer_closed();
                Err(End::Close(
                    close::TRY_AGAIN,
                    "Too slow; reconnect with since.",
                ))
            }
            Err(FeedError::Closed) => Err(End::Close(close::GOING_AWAY, "Room closed.")),
        }
    }

    /// Sends stored events after `self.last` up to `until` from storage.
    async fn catch_up(&mut self, until: Seq) -> Result<(), End> {
        while self.last < until {
            let want = u32::try_from(until.get() - self.last.get())
                .unwrap_or(CATCH_UP_PAGE)
                .min(CATCH_UP_PAGE);
            let events = self
                .app
                .storage()
                .events_since(self.room.id, self.last, want)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "catch-up from storage failed");
                    End::Close(
                        close::TRY_AGAIN,
                        "Storage unavailable; reconnect with since.",
                    )
                })?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            for event in &events {
                self.push(utf8(encode_frame(event))).await?;
            }
            self.last = last;
        }
        Ok(())
    }

    async fn push(&mut self, frame: Utf8Bytes) -> Result<(), End> {
        let timeout = self.app.config().write_timeout;
        match tokio::time::timeout(timeout, self.sink.feed(Message::Text(frame))).await {
            Ok(Ok(())) => {
                self.pending += 1;
                Ok(())
            }
            Ok(Err(_)) => Err(End::Quiet),
            Err(_) => Err(End::Close(
                close::TRY_AGAIN,
                "Too slow; reconnect with since.",
            )),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        let timeout = self.app.config().write_timeout;
        match tokio::time::timeout(timeout, self.sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Quiet),
            Err(_) => Err(End::Close(
                close::TRY_AGAIN,
                "Too slow; reconnect with since.",
            )),
        }
    }
}

/// What ends a socket's right to stay open: its token's expiry, its
/// session's logout.
struct Ending<'a> {
    expires: Option<time::OffsetDateTime>,
    login: Option<&'a crate::sessions::SessionWatch<'a>>,
}

impl Ending<'_> {
    /// Resolves with the close reason when either comes.
    async fn wait(self) -> &'static str {
        let logout = async {
            match self.login {
                Some(watch) => watch.ended().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = token_expiry(self.expires) => "Token expired.",
            () = logout => "Session ended.",
        }
    }
}

/// Resolves when the connection's token expires (never without one).
async fn token_expiry(expires: Option<time::OffsetDateTime>) {
    match expires {
        Some(at) => {
            let left = at - time::OffsetDateTime::now_utc();
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}
