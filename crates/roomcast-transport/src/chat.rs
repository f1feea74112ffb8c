//! The chat operations both doors share (a WebSocket frame, an HTTP post):
//! store, then broadcast what was stored. One code path, so a message
//! posted over HTTP reaches sockets exactly like one sent over a socket.

use roomcast_domain::{ClientId, Event, EventKind, MessageBody, Room, RoomId, User};
use roomcast_storage::{NewMessage, Posted, StorageError, WriteOp, WriteOutcome};
use std::time::Instant;

use tokio::task::JoinHandle;

use crate::AppState;
use crate::backfill::encode_event;
use crate::metrics;

/// A queued write's outcome, once stored and broadcast.
pub(crate) type Queued = JoinHandle<Result<WriteOutcome, StorageError>>;

/// Stores a message and broadcasts its `new` event; a duplicate `clientId`
/// stores and broadcasts nothing and returns the original event.
pub(crate) async fn post(
    app: &AppState,
    author: &User,
    room: &Room,
    body: MessageBody,
    client_id: Option<ClientId>,
) -> Result<Posted, StorageError> {
    let new = NewMessage {
        room_id: room.id,
        author: author.clone(),
        body,
        client_id,
    };
    outcome(queue(app, WriteOp::Post(new)).await?)
        .await?
        .posted()
}

/// Queues a write in its room's commit order and returns as soon as it is
/// queued; the returned task then waits for the commit and broadcasts what
/// was stored. Returning early is what lets a socket keep several writes in
/// flight, so one slow commit does not hold up the frames behind it, while
/// the queue keeps them in the order the client sent them.
///
/// Why a detached task, tracked with the sockets so shutdown waits for it:
/// the caller (a socket's reader, an HTTP handler) may be dropped at any
/// await when its client goes away; a write that commits after that must
/// still be broadcast, or the room would not see a stored event until a
/// later one revealed the gap. Nothing awaits between queueing and
/// spawning, so no write is queued without its task.
pub(crate) async fn queue(app: &AppState, op: WriteOp) -> Result<Queued, StorageError> {
    let room = op.room();
    let queued = Instant::now();
    let pending = app.storage().queue_write(op).await?;
    let task_app = app.clone();
    Ok(app.sockets().spawn(async move {
        let outcome = pending.await;
        metrics::storage_write(queued.elapsed(), outcome.is_ok());
        let outcome = outcome?;
        match &outcome {
            WriteOutcome::Posted(posted) if posted.duplicate => {}
            WriteOutcome::Posted(Posted { event, .. }) | WriteOutcome::Event(event) => {
                publish(&task_app, room, event).await;
            }
        }
        Ok(outcome)
    }))
}

/// Waits for a queued write's outcome.
pub(crate) async fn outcome(mut queued: Queued) -> Result<WriteOutcome, StorageError> {
    outcome_of(&mut queued).await
}

/// [`outcome`] without giving up the handle (a socket's queue keeps it
/// until answered, so a dropped wait can be resumed).
pub(crate) async fn outcome_of(queued: &mut Queued) -> Result<WriteOutcome, StorageError> {
    match queued.await {
        Ok(result) => result,
        Err(e) => Err(StorageError::Unavailable(Box::new(e))),
    }
}

/// Broadcasts a stored event. A layer failure is logged, not reported to
/// the sender: the event is stored and this node's sockets have it; other
/// nodes fill the gap from storage.
async fn publish(app: &AppState, room: RoomId, event: &Event) {
    metrics::event_stored(match event.kind {
        EventKind::New(_) => "new",
        EventKind::Update { .. } => "update",
        EventKind::Delete { .. } => "delete",
    });
    let stored = Instant::now();
    let frame = encode_event(event);
    let published = app.hub().publish(room, frame).await;
    metrics::channel_publish(stored.elapsed(), published.is_ok());
    if let Err(e) = published {
        tracing::warn!(error = %e, room = %room, seq = %event.seq, "publish to other nodes failed");
    }
    metrics::store_to_broadcast(stored.elapsed());
}
