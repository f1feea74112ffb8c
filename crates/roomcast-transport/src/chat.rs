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
    let posted = app.storage().post_message(new).await?;
    if !posted.duplicate {
        publish(app, room, &posted.event).await;
    }
    Ok(posted)
}

pub(crate) async fn edit(
    app: &AppState,
    author: &User,
    room: &Room,
    id: MessageId,
    body: MessageBody,
) -> Result<Event, StorageError> {
    let event = app
        .storage()
        .edit_message(room.id, author.id, id, body)
        .await?;
    publish(app, room, &event).await;
    Ok(event)
}

pub(crate) async fn delete(
    app: &AppState,
    author: &User,
    room: &Room,
    id: MessageId,
) -> Result<Event, StorageError> {
    let event = app.storage().delete_message(room.id, author.id, id).await?;
    publish(app, room, &event).await;
    Ok(event)
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
