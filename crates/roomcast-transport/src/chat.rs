//! The chat operations every door shares (a WebSocket frame, an HTTP
//! post, a service key, an embedder's [`Publisher`]): store, then
//! broadcast what was stored. One code path ([`queue`]), so a message
//! posted any other way reaches sockets exactly like one sent over a
//! socket: the same `seq`, the same `clientId` idempotency, the same
//! broadcast after the commit.

use roomcast_domain::{ClientId, Event, EventKind, MessageBody, MessageId, RoomId, User, UserId};
use roomcast_storage::{NewMessage, Posted, StorageError, WriteOp, WriteOutcome};
use std::time::Instant;

use tokio::task::JoinHandle;

use crate::AppState;
use crate::backfill::encode_event;
use crate::metrics;

/// A queued write's outcome, once stored and broadcast.
pub(crate) type Queued = JoinHandle<Result<WriteOutcome, StorageError>>;

/// Posts, edits and deletes messages as any user, from the server side:
/// what the HTTP API does for people and service keys, for an embedder's
/// own code (the `group_send` of Django Channels, but stored first).
/// A cheap clone of the app's state ([`AppState::publisher`]).
///
/// It checks what storage checks (the room exists; only a message's author
/// edits or deletes it) and nothing a door checks: membership, visibility
/// and rate limits are the caller's to decide, so a bot may post into any
/// room without taking part in it.
#[derive(Clone, Debug)]
pub struct Publisher {
    app: AppState,
}

impl Publisher {
    pub(crate) fn new(app: AppState) -> Self {
        Self { app }
    }

    /// Stores a message by `author` in `room` and broadcasts its `new`
    /// event. With a `client_id` this author already used in this room,
    /// stores and broadcasts nothing and returns the original event
    /// (`duplicate: true`).
    pub async fn post(
        &self,
        room: RoomId,
        author: &User,
        body: MessageBody,
        client_id: Option<ClientId>,
    ) -> Result<Posted, StorageError> {
        let new = NewMessage {
            room_id: room,
            author: author.clone(),
            body,
            client_id,
        };
        self.write(WriteOp::Post(new)).await?.posted()
    }

    /// Edits `author`'s message `id` in `room` and broadcasts its `update`
    /// event: `NotFound` when the room has no such message, `Forbidden`
    /// when `author` did not write it.
    pub async fn edit(
        &self,
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    ) -> Result<Event, StorageError> {
        let op = WriteOp::Edit {
            room,
            author,
            id,
            body,
        };
        self.write(op).await?.event()
    }

    /// Deletes `author`'s message `id` in `room` and broadcasts its
    /// `delete` event, under the rules of [`edit`](Self::edit).
    pub async fn delete(
        &self,
        room: RoomId,
        author: UserId,
        id: MessageId,
    ) -> Result<Event, StorageError> {
        self.write(WriteOp::Delete { room, author, id })
            .await?
            .event()
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        outcome(queue(&self.app, op).await?).await
    }
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
