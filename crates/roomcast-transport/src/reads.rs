//! Read positions, for both doors (the `read` frame, `PUT .../read`): store
//! the position, then tell the room (a read receipt) and the reader's own
//! user sockets (their unread count). One code path, so a read over HTTP
//! is seen exactly like one over a socket.
//!
//! Receipts are coalesced per reader and room: at most one every
//! [`RECEIPT_INTERVAL`], the latest position winning, so a client that
//! marks every message read as it scrolls sends the room a handful of
//! frames, not one per message. Storage still gets every position (each
//! is one small UPDATE), so nothing read is ever lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use roomcast_broadcast::Envelope;
use roomcast_domain::wire::{ChatEvent, ServerFrame};
use roomcast_domain::{Room, RoomId, Seq, User, UserId, Username};
use roomcast_storage::{ReadMark, StorageError};
use tokio::time::Instant;

use crate::{AppState, user_feed};

/// The least time between two receipts of one reader in one room.
pub(crate) const RECEIPT_INTERVAL: Duration = Duration::from_millis(500);
/// Past this many tracked readers, idle ones are forgotten.
const TRACKED_READERS: usize = 10_000;

/// Moves `user`'s read position in `room` forward to `seq` (clamped to
/// the room's last seq). `NotFound` when the user is not a participant.
pub(crate) async fn mark_read(
    app: &AppState,
    room: &Room,
    user: &User,
    seq: Seq,
) -> Result<ReadMark, StorageError> {
    let mark = app.storage().mark_read(room.id, user.id, seq).await?;
    if mark.moved {
        app.receipts().send(app, room.id, user, mark.state.read_seq);
        user_feed::notify_read(app, room, user.id, mark.state).await;
    }
    Ok(mark)
}

/// The receipt coalescer: when each reader's last receipt left, and the
/// position waiting to follow it.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    readers: Mutex<HashMap<(RoomId, UserId), Reader>>,
}

#[derive(Debug)]
struct Reader {
    username: Username,
    last_sent: Instant,
    /// A position waiting for the interval to pass (a task will send it).
    waiting: Option<Seq>,
}

impl Receipts {
    /// Sends `user`'s receipt for `seq` now, or, within the interval of
    /// the last one, once the interval has passed (with whatever position
    /// is latest by then).
    fn send(&self, app: &AppState, room: RoomId, user: &User, seq: Seq) {
        let user_key = user.id;
        let now = Instant::now();
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() > TRACKED_READERS {
            readers.retain(|_, r| r.waiting.is_some() || now - r.last_sent < RECEIPT_INTERVAL);
        }
        let reader = readers.entry((room, user_key)).or_insert_with(|| Reader {
            username: user.username.clone(),
            last_sent: now - RECEIPT_INTERVAL,
            waiting: None,
        });
        if let Some(waiting) = &mut reader.waiting {
            *waiting = (*waiting).max(seq);
            return;
        }
        if now - reader.last_sent >= RECEIPT_INTERVAL {
            reader.last_sent = now;
            drop(readers);
            publish(app.clone(), room, user.id, user.username.clone(), seq);
            return;
        }
        reader.waiting = Some(seq);
        let due = reader.last_sent + RECEIPT_INTERVAL;
        drop(readers);
        let task_app = app.clone();
        app.sockets().spawn(async move {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = task_app.shutdown_token().cancelled() => return,
            }
            let next = {
                let mut readers = task_app
                    .receipts()
                    .readers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                readers.get_mut(&(room, user_key)).and_then(|r| {
                    r.last_sent = Instant::now();
                    r.waiting.take().map(|seq| (r.username.clone(), seq))
                })
            };
            if let Some((username, seq)) = next {
                publish(task_app, room, user_key, username, seq);
            }
        });
    }
}

/// Sends a receipt to the room's other sockets: the reader's own do not
/// get it back (they know what they read).
fn publish(app: AppState, room: RoomId, reader: UserId, user: Username, seq: Seq) {
    let frame = ServerFrame::Event(ChatEvent::Read { user, seq });
    let envelope = Envelope::Ephemeral {
        frame: Bytes::from(frame.to_json()),
        from: Some(reader),
    };
    // Publishing may wait on the layer: not inside the caller's lock, and
    // not holding up the reader's next frame.
    app.sockets().clone().spawn(async move {
        if let Err(e) = app.hub().publish(room, envelope).await {
            tracing::debug!(error = %e, "read receipt not relayed to other nodes");
        }
    });
}
