//! The writer half: the room's events and the reader's replies out, each
//! stored event once and in `seq` order; pings for a quiet peer; the close.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use roomcast_broadcast::{Envelope, FeedError, RoomFeed};
use roomcast_domain::wire::{ChatEvent, ServerFrame};
use roomcast_domain::{Room, Seq, User};

use super::{End, Heard, Outgoing, Session, close, encode_frame, too_slow, utf8};
use crate::replies::ReplyReceiver;
use crate::{AppState, ShutdownMode, metrics};

/// Events fetched from storage per round trip when catching up.
const CATCH_UP_PAGE: u32 = 500;
/// Frames written before one flush, so a burst costs one syscall.
const WRITE_BATCH: usize = 64;

/// What the live writer serves, borrowed from the session.
pub(super) struct Live<'a> {
    pub user: &'a User,
    pub room: &'a Room,
    pub ending: Ending<'a>,
    pub feed: &'a mut RoomFeed,
    pub heard: &'a Heard,
}

/// Sends the room's events and the reader's replies until the session
/// ends, then says so to the peer.
pub(super) async fn write_loop<S>(
    app: &AppState,
    live: Live<'_>,
    started: Result<Seq, End>,
    mut out: ReplyReceiver<Outgoing>,
    mut sink: S,
) -> End
where
    S: Sink<Message> + Unpin,
{
    let end = match started {
        Ok(last) => {
            let mut writer = Writer {
                app,
                room: live.room,
                user: live.user,
                sink: &mut sink,
                last,
                pending: 0,
            };
            writer
                .live(live.ending, live.feed, live.heard, &mut out)
                .await
        }
        Err(end) => end,
    };
    let timeout = app.config().write_timeout;
    match &end {
        End::Close(code, reason) => {
            let frame = CloseFrame {
                code: *code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(timeout, sink.send(Message::Close(Some(frame)))).await;
        }
        End::Answer(frame) => {
            let _ = tokio::time::timeout(timeout, answer_close(&mut sink, frame.clone())).await;
        }
        End::Quiet => {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        }
        End::Drop | End::Dead => {}
    }
    end
}

/// Answers a client's close frame with the same code and ends the
/// connection, so the client sees a clean close (PROTOCOL.md section 5).
/// tungstenite has already queued the echo when it read the client's frame
/// (and refuses a second close, so the send fails there): the flush sends
/// it, and closing the sink lets the socket's drop end TCP. Other sinks (the
/// tests' channels) get the close frame from the send.
async fn answer_close<S: Sink<Message> + Unpin>(sink: &mut S, frame: Option<CloseFrame>) {
    let _ = sink.send(Message::Close(frame)).await;
    let _ = sink.flush().await;
    let _ = sink.close().await;
}

/// Where the socket starts: the room's current seq, or after `since` with
/// everything since replayed from storage and `synced` sent.
pub(super) async fn start<S>(app: &AppState, session: &Session, sink: &mut S) -> Result<Seq, End>
where
    S: Sink<Message> + Unpin,
{
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
        user: &session.user,
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

pub(super) async fn send_now<S>(sink: &mut S, frame: Utf8Bytes) -> Result<(), End>
where
    S: Sink<Message> + Unpin,
{
    sink.send(Message::Text(frame))
        .await
        .map_err(|_| End::Quiet)
}

struct Writer<'a, S> {
    app: &'a AppState,
    room: &'a Room,
    user: &'a User,
    sink: &'a mut S,
    /// The last seq this socket has sent (or, before live, its start).
    last: Seq,
    /// Frames fed but not yet flushed.
    pending: usize,
}

impl<S: Sink<Message> + Unpin> Writer<'_, S> {
    async fn live(
        &mut self,
        ending: Ending<'_>,
        feed: &mut RoomFeed,
        heard: &Heard,
        out: &mut ReplyReceiver<Outgoing>,
    ) -> End {
        // A child token, waited on through one pinned future: polling the
        // server's own token locks its mutex (and re-registers a waiter)
        // on every wake of every socket, one lock all sockets contend for.
        let shutdown = self.app.shutdown_token().child_token();
        let shutting_down = shutdown.cancelled();
        let expiry = ending.wait();
        let config = self.app.config();
        let keepalive = tokio::time::sleep(config.ping_interval);
        tokio::pin!(shutting_down, expiry, keepalive);
        loop {
            let step = tokio::select! {
                biased;
                () = &mut shutting_down => Err(match config.shutdown_mode {
                    ShutdownMode::Frame => End::Close(close::GOING_AWAY, "Server shutting down."),
                    ShutdownMode::Drop => End::Drop,
                }),
                reason = &mut expiry => Err(End::Close(close::POLICY, reason)),
                reply = out.recv() => match reply {
                    // Events already in the feed go first: those the
                    // sender's earlier frames caused are there by now, so
                    // its replies keep the order of its frames.
                    Some(Outgoing::Frame(frame)) => match self.drain_all(feed).await {
                        Ok(()) => self.push(frame).await,
                        Err(end) => Err(end),
                    },
                    // Likewise before a close the reader asks for (1009):
                    // the events of the writes answered before it go out.
                    Some(Outgoing::Close(code, reason)) => match self.drain_all(feed).await {
                        Ok(()) => Err(End::Close(code, reason)),
                        Err(end) => Err(end),
                    },
                    Some(Outgoing::Answer(frame)) => Err(End::Answer(frame)),
                    None => Err(End::Close(close::NORMAL, "")),
                },
                received = feed.recv() => self.deliver(received).await,
                () = &mut keepalive => {
                    let (next, step) = self.keep_alive(heard).await;
                    keepalive.as_mut().reset(tokio::time::Instant::now() + next);
                    step
                }
            };
            let step = match step {
                Ok(()) => self.drain(feed).await,
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

    /// Pings a peer that has been quiet for `ping_interval`; gives up on
    /// one still silent `ping_timeout` after that. Returns when to look
    /// again.
    async fn keep_alive(&mut self, heard: &Heard) -> (Duration, Result<(), End>) {
        let config = self.app.config();
        let silent = heard.silent_for();
        if silent >= config.ping_interval + config.ping_timeout {
            tracing::info!(user = %self.user.username, ?silent, "peer stopped answering; dropped");
            return (Duration::ZERO, Err(End::Dead));
        }
        if silent < config.ping_interval {
            return (config.ping_interval - silent, Ok(()));
        }
        let sent = self.feed_frame(Message::Ping(Default::default())).await;
        let next = (config.ping_interval + config.ping_timeout).saturating_sub(silent);
        (next.max(Duration::from_millis(1)), sent)
    }

    /// Sends everything the feed has ready now.
    async fn drain_all(&mut self, feed: &mut RoomFeed) -> Result<(), End> {
        loop {
            match feed.try_recv() {
                Ok(Some(envelope)) => self.deliver(Ok(envelope)).await?,
                Ok(None) => return Ok(()),
                Err(e) => return self.deliver(Err(e)).await,
            }
        }
    }

    /// Sends whatever else the feed has ready, up to a batch, before one flush.
    async fn drain(&mut self, feed: &mut RoomFeed) -> Result<(), End> {
        while self.pending < WRITE_BATCH {
            match feed.try_recv() {
                Ok(Some(envelope)) => self.deliver(Ok(envelope)).await?,
                Ok(None) => break,
                Err(e) => return self.deliver(Err(e)).await,
            }
        }
        Ok(())
    }

    async fn deliver(&mut self, received: Result<Envelope, FeedError>) -> Result<(), End> {
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
            Ok(Envelope::Evict { user: evicted }) if evicted == self.user.id => {
                Err(End::Close(close::POLICY, "Membership revoked."))
            }
            Ok(Envelope::Evict { .. }) => Ok(()),
            Err(FeedError::Lagged(_)) => Err(too_slow(self.user, "fell a room channel behind")),
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
        self.feed_frame(Message::Text(frame)).await
    }

    async fn feed_frame(&mut self, message: Message) -> Result<(), End> {
        let timeout = self.app.config().write_timeout;
        match tokio::time::timeout(timeout, self.sink.feed(message)).await {
            Ok(Ok(())) => {
                self.pending += 1;
                Ok(())
            }
            Ok(Err(_)) => Err(End::Quiet),
            Err(_) => Err(too_slow(self.user, "a write timed out")),
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
            Err(_) => Err(too_slow(self.user, "a flush timed out")),
        }
    }
}

/// What ends a socket's right to stay open: its token's expiry, its
/// session's logout.
pub(super) struct Ending<'a> {
    pub expires: Option<time::OffsetDateTime>,
    pub login: Option<&'a crate::sessions::SessionWatch<'a>>,
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
