//! The reader half: client frames in, writes queued, replies out in the
//! order the frames came.

use std::collections::VecDeque;
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use roomcast_broadcast::Envelope;
use roomcast_domain::wire::{ChatEvent, ClientFrame, ErrorCode, ErrorFrame, FrameIds, ServerFrame};
use roomcast_domain::{Room, User};
use roomcast_storage::{NewMessage, StorageError, WriteOp, WriteOutcome};

use super::{Heard, MAX_WRITES_IN_FLIGHT, Outgoing, close, encode_frame, error_frame, utf8};
use crate::limits::Abuse;
use crate::replies::ReplySender;
use crate::{AppState, chat, metrics, reads};

/// Reads until the client closes or goes away; every frame read is
/// answered (or not) in order before the writer is told to close.
pub(super) async fn read_loop<R>(
    app: &AppState,
    user: &User,
    room: &Room,
    mut stream: R,
    out: ReplySender<Outgoing>,
    heard: &Heard,
) where
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let mut abuse = Abuse::new(&app.config().rate_limit);
    let mut replies = Replies::default();
    loop {
        let message = tokio::select! {
            biased;
            reply = replies.next() => {
                if let Some(frame) = reply
                    && out.send(Outgoing::Frame(frame)).await.is_err()
                {
                    return;
                }
                continue;
            }
            // A socket with its writes all in flight reads no further, so
            // TCP pushes back on a client that sends faster than we store.
            message = stream.next(), if replies.len() < MAX_WRITES_IN_FLIGHT => message,
        };
        let Some(message) = message else { break };
        heard.now();
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                let handled = over_limit(app, user, FrameIds::default()).unwrap_or_else(|| {
                    Handled::Reply(error_frame(ErrorFrame::new(
                        ErrorCode::BadFrame,
                        "Invalid frame: binary frames are not supported.",
                    )))
                });
                if !take(app, user, handled, &mut replies, &mut abuse).await {
                    replies.answer_all(&out).await;
                    let _ = out
                        .send(Outgoing::Close(close::POLICY, "Too many messages."))
                        .await;
                    return;
                }
                continue;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            // The client is done: its close is answered at once (after a
            // close frame nothing else may be sent), and the writes it had
            // in flight still commit and reach the room.
            Ok(Message::Close(frame)) => {
                let _ = out.send(Outgoing::Answer(frame)).await;
                return;
            }
            Err(e) if too_big(&e) => {
                replies.answer_all(&out).await;
                let _ = out
                    .send(Outgoing::Close(close::TOO_BIG, "Message too big."))
                    .await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "socket read failed");
                break;
            }
        };
        // Boxed: the handling state lives on the heap only while a frame is
        // being handled, so an idle socket's task stays small.
        let handled = Box::pin(handle_text(app, user, room, text.as_str())).await;
        if !take(app, user, handled, &mut replies, &mut abuse).await {
            replies.answer_all(&out).await;
            let _ = out
                .send(Outgoing::Close(close::POLICY, "Too many messages."))
                .await;
            return;
        }
    }
    // The client is done sending: what it sent is still answered before
    // the writer is told to close.
    replies.answer_all(&out).await;
}

/// Whether a read failed because the frame was over the size limit.
fn too_big(e: &axum::Error) -> bool {
    matches!(
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Puts a handled frame's reply in its place (queuing its write first).
/// False when the socket should be closed for flooding past its limit.
async fn take(
    app: &AppState,
    user: &User,
    handled: Handled,
    replies: &mut Replies,
    abuse: &mut Abuse,
) -> bool {
    match handled {
        Handled::Nothing => {}
        Handled::Reply(frame) => replies.ready(frame),
        Handled::Limited(frame) => {
            if abuse.refused(Instant::now()) {
                tracing::info!(user = %user.username, "socket closed for flooding past its rate limit");
                return false;
            }
            if let Some(frame) = frame {
                replies.ready(frame);
            }
        }
        Handled::Write(op, what) => match Box::pin(chat::queue(app, op)).await {
            Ok(queued) => replies.write(queued, what),
            Err(e) => replies.ready(error_frame(refusal(e, &what))),
        },
    }
    true
}

/// Takes one message from the user's budget (shared by their sockets and
/// HTTP posts); `Some` refusal, naming the frame, when it is spent. The
/// consumer's one call into the rate limiter.
fn over_limit(app: &AppState, user: &User, ids: FrameIds) -> Option<Handled> {
    let wait = app.limits().message(user.id).err()?;
    metrics::rate_limited("message");
    let wait = wait.as_millis().max(1);
    let err = ErrorFrame::new(
        ErrorCode::RateLimited,
        format!("Too many messages; wait {wait} ms. Nothing was stored."),
    );
    Some(Handled::Limited(Some(error_frame(err.refusing(ids)))))
}

/// A socket's replies, in the order of the frames they answer: a refusal
/// known at once waits behind the writes queued before it.
#[derive(Default)]
struct Replies {
    /// Empty (and unallocated) while idle.
    queue: VecDeque<Reply>,
}

enum Reply {
    /// Known now (an error, nothing to wait for).
    Ready(Utf8Bytes),
    /// A queued write: answered once it has committed (or failed).
    Write {
        queued: chat::Queued,
        what: WriteKind,
    },
}

/// What a queued write was, to word its refusal.
enum WriteKind {
    Post { client_id: Option<String> },
    Edit { id: String },
    Delete { id: String },
}

impl Replies {
    fn len(&self) -> usize {
        self.queue.len()
    }

    fn ready(&mut self, frame: Utf8Bytes) {
        self.queue.push_back(Reply::Ready(frame));
    }

    fn write(&mut self, queued: chat::Queued, what: WriteKind) {
        self.queue.push_back(Reply::Write { queued, what });
    }

    /// The oldest reply once it is known (`None`: that write needs no
    /// answer). Never resolves while nothing waits; cancel-safe: a write's
    /// handle stays queued until its outcome is in.
    async fn next(&mut self) -> Option<Utf8Bytes> {
        let outcome = match self.queue.front_mut() {
            None => return std::future::pending().await,
            Some(Reply::Ready(_)) => None,
            Some(Reply::Write { queued, .. }) => Some(chat::outcome_of(queued).await),
        };
        match (self.queue.pop_front()?, outcome) {
            (Reply::Ready(frame), _) => Some(frame),
            (Reply::Write { what, .. }, Some(outcome)) => answer(outcome, &what),
            (Reply::Write { .. }, None) => None,
        }
    }

    async fn answer_all(&mut self, out: &ReplySender<Outgoing>) {
        while !self.queue.is_empty() {
            if let Some(frame) = self.next().await
                && out.send(Outgoing::Frame(frame)).await.is_err()
            {
                return;
            }
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
        (WriteKind::Edit { id }, StorageError::Forbidden) => {
            ErrorFrame::new(ErrorCode::Forbidden, "You can only edit your own messages.")
                .with_message_id(Some(id.clone()))
        }
        (WriteKind::Edit { id }, e) => storage_error(e, "edit").with_message_id(Some(id.clone())),
        (WriteKind::Delete { id }, StorageError::Forbidden) => ErrorFrame::new(
            ErrorCode::Forbidden,
            "You can only delete your own messages.",
        )
        .with_message_id(Some(id.clone())),
        (WriteKind::Delete { id }, e) => {
            storage_error(e, "delete").with_message_id(Some(id.clone()))
        }
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

/// What the reader does with a client frame.
enum Handled {
    Nothing,
    /// Answer the sender (in turn).
    Reply(Utf8Bytes),
    /// Refused by the user's rate limit: nothing stored or relayed; answer
    /// the sender (or, for typing, say nothing).
    Limited(Option<Utf8Bytes>),
    /// Queue a write; its answer comes when it has committed.
    Write(WriteOp, WriteKind),
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
            if let Some(limited) = over_limit(app, user, ClientFrame::ids_of(text)) {
                return limited;
            }
            frame
        }
        Err(e) => {
            // Garbage counts against the limit too: each earns a reply.
            let ids: FrameIds = ClientFrame::ids_of(text);
            if let Some(limited) = over_limit(app, user, ids.clone()) {
                return limited;
            }
            let err = ErrorFrame::new(e.code(), e.to_string());
            return Handled::Reply(error_frame(err.refusing(ids)));
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
            WriteKind::Edit { id: id.to_string() },
        ),
        ClientFrame::Delete { id } => Handled::Write(
            WriteOp::Delete {
                room: room.id,
                author: user.id,
                id,
            },
            WriteKind::Delete { id: id.to_string() },
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
            Handled::Nothing
        }
        ClientFrame::Read { seq } => match reads::mark_read(app, room, user, seq).await {
            Ok(_) => Handled::Nothing,
            Err(StorageError::NotFound) => Handled::Reply(error_frame(ErrorFrame::new(
                ErrorCode::Forbidden,
                "You are not a participant of this room.",
            ))),
            Err(e) => Handled::Reply(error_frame(storage_error(e, "read"))),
        },
    }
}
