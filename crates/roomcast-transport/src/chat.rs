//! The chat operations both doors share (a WebSocket frame, an HTTP post):
//! store, then broadcast what was stored. One code path, so a message
//! posted over HTTP reaches sockets exactly like one sent over a socket.

use roomcast_domain::{ClientId, Event, EventKind, MessageBody, MessageId, Room, User};
use roomcast_storage::{NewMessage, Posted, StorageError};

use crate::AppState;
use crate::backfill::encode_event;
use crate::metrics;

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
    let room = room.clone();
    detached(app, move |app| async move {
        let posted = app.storage().post_message(new).await?;
        if !posted.duplicate {
            publish(&app, &room, &posted.event).await;
        }
        Ok(posted)
    })
    .await
}

pub(crate) async fn edit(
    app: &AppState,
    author: &User,
    room: &Room,
    id: MessageId,
    body: MessageBody,
) -> Result<Event, StorageError> {
    let (room, author) = (room.clone(), author.id);
    detached(app, move |app| async move {
        let event = app
            .storage()
            .edit_message(room.id, author, id, body)
            .await?;
        publish(&app, &room, &event).await;
        Ok(event)
    })
    .await
}

pub(crate) async fn delete(
    app: &AppState,
    author: &User,
    room: &Room,
    id: MessageId,
) -> Result<Event, StorageError> {
    let (room, author) = (room.clone(), author.id);
    detached(app, move |app| async move {
        let event = app.storage().delete_message(room.id, author, id).await?;
        publish(&app, &room, &event).await;
        Ok(event)
    })
    .await
}

/// Runs "store, then publish" as its own task, tracked with the sockets so
/// shutdown waits for it. Why: the caller (a socket's reader, an HTTP
/// handler) may be dropped at any await when its client goes away; a write
/// that commits after that must still be broadcast, or the room would not
/// see a stored event until a later one revealed the gap.
async fn detached<T, F, Fut>(app: &AppState, work: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(AppState) -> Fut,
    Fut: Future<Output = Result<T, StorageError>> + Send + 'static,
{
    let task = app.sockets().spawn(work(app.clone()));
    match task.await {
        Ok(result) => result,
        Err(e) => Err(StorageError::Unavailable(Box::new(e))),
    }
}

/// Broadcasts a stored event. A layer failure is logged, not reported to
/// the sender: the event is stored and this node's sockets have it; other
/// nodes fill the gap from storage.
async fn publish(app: &AppState, room: &Room, event: &Event) {
    metrics::event_stored(match event.kind {
        EventKind::New(_) => "new",
        EventKind::Update { .. } => "update",
        EventKind::Delete { .. } => "delete",
    });
    if let Err(e) = app.hub().publish(room.id, encode_event(event)).await {
        tracing::warn!(error = %e, room = %room.id, seq = event.seq, "publish to other nodes failed");
    }
}
