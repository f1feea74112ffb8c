//! The chat consumer: one per WebSocket, the seed's `ChatConsumer`.
//!
//! Two halves run side by side in the socket's task. The reader
//! ([`read`]) parses client frames and queues writes to storage; each
//! stored event is published to the room (sender included) only after its
//! commit, and the sender's replies leave in the order its frames came. The
//! writer ([`write`]) sends what the room's feed delivers, in `seq` order and
//! exactly once: it remembers the last seq it sent, skips anything at or
//! below it, and fetches from storage anything it would otherwise skip over.
//! The same rule serves resume (`?since=N`): start at N, catch up from
//! storage, then go live.
//!
//! Generic over the socket's two halves (any `Sink<Message>` and
//! `Stream<Item = Result<Message, axum::Error>>`, as in axum's
//! testing-websockets example), so its rules are tested through channels in
//! `tests.rs`, without a server.

mod read;
#[cfg(test)]
mod tests;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use roomcast_broadcast::{Envelope, RoomFeed};
use roomcast_domain::wire::ErrorFrame;
use roomcast_domain::{Event, Room, Seq, User};

use crate::backfill::encode_event;
use crate::replies;
use crate::state::ConnectionSlot;
use crate::{AppState, metrics};

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
pub(crate) mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN: u16 = 1013;
}

/// Writes one socket may have queued and not yet answered. Past it the
/// reader stops reading, so TCP pushes back on a client that sends faster
/// than storage commits; it also bounds the reader-to-writer reply queue.
pub(crate) const MAX_WRITES_IN_FLIGHT: usize = 32;

/// What a socket closed for being too slow is told (1013).
const TOO_SLOW: &str = "Too slow; reconnect with since.";

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

/// How a session ended: what the socket was last told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    Close(u16, &'static str),
    /// The client sent this close frame: sent back, then TCP ended.
    Answer(Option<CloseFrame>),
    /// The peer is gone or the reader finished: nothing more to say.
    Quiet,
    /// Shutdown in `drop` mode: TCP ended without a close frame.
    Drop,
    /// The peer answered no ping: dropped without a word.
    Dead,
}

impl End {
    /// What the access log says of the close: its code and reason.
    fn said(&self) -> (Option<u16>, String) {
        match self {
            End::Close(code, reason) => (Some(*code), (*reason).to_owned()),
            End::Answer(Some(frame)) => (Some(frame.code), frame.reason.to_string()),
            End::Answer(None) => (None, "closed by the client".to_owned()),
            End::Quiet => (None, "connection lost".to_owned()),
            End::Drop => (None, "dropped at shutdown".to_owned()),
            End::Dead => (None, "no answer to pings".to_owned()),
        }
    }
}

/// When the peer was last heard from (any frame), shared by the reader
/// (which hears) and the writer (which pings). Atomic, not a `Cell`: the
/// socket's future must stay `Send`.
struct Heard {
    start: Instant,
    millis: AtomicU64,
}

impl Heard {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.millis.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Serves one socket until it closes; returns how it ended.
pub(crate) async fn run<S, R>(
    app: AppState,
    mut sink: S,
    stream: R,
    mut session: Box<Session>,
) -> End
where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    // Fields are borrowed, never moved out, while the socket lives: moved
    // fields would be stored again in this future, for every connection.
    let s = &mut *session;
    crate::access::socket_opened(&s.user, &s.room);
    let opened = Instant::now();
    metrics::connection_opened();
    // Replay what `since` asks for before reading any client frame, so the
    // client's own new messages come after the replay.
    let mut started = Box::pin(write::start(&app, s, &mut sink)).await;
    // Live from here: the socket counts as present (a `join` for the
    // others if it is the user's first) and gets the presence list.
    if started.is_ok() {
        let presence = app
            .hub()
            .arrive(&mut s.feed, s.user.id, &s.user.username)
            .await;
        if let Envelope::Ephemeral { frame, .. } = presence
            && let Err(end) = write::send_now(&mut sink, utf8(frame)).await
        {
            started = Err(end);
        }
    }
    let heard = Heard::new();
    let (out_tx, out_rx) = replies::queue(MAX_WRITES_IN_FLIGHT);
    let reader = read::read_loop(&app, &s.user, &s.room, stream, out_tx, &heard);
    let watch = s.login.map(|login| app.sessions().watch(login));
    let writer = write::write_loop(
        &app,
        write::Live {
            user: &s.user,
            room: &s.room,
            ending: write::Ending {
                expires: s.expires,
                login: watch.as_ref(),
            },
            feed: &mut s.feed,
            heard: &heard,
        },
        started,
        out_rx,
        sink,
    );
    // The writer ends the session: when it stops, the reader is dropped.
    let end = tokio::select! {
        end = writer => end,
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
    let (code, reason) = end.said();
    crate::access::socket_closed(&user, &room, code, &reason, opened.elapsed());
    end
}

/// The reader finishing does not end the session by itself: it tells the
/// writer (by dropping its sender), which closes properly. So this future
/// never completes.
async fn reader_then_wait(reader: impl Future<Output = ()>) -> std::convert::Infallible {
    reader.await;
    std::future::pending().await
}

/// A socket too slow to take what its room sends: logged, counted, and
/// closed with 1013 (it resumes with `since` and loses nothing).
fn too_slow(user: &User, why: &'static str) -> End {
    tracing::info!(user = %user.username, why, "slow consumer closed");
    metrics::slow_consumer_closed();
    End::Close(close::TRY_AGAIN, TOO_SLOW)
}

fn encode_frame(event: &Event) -> Bytes {
    match encode_event(event) {
        Envelope::Event { frame, .. } => frame,
        _ => Bytes::new(),
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
