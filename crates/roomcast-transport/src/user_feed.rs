//! `GET /ws/user`: one socket for all of a user's rooms (PROTOCOL.md
//! section 7). It sends `activity` (a room's latest seq and the user's
//! unread count there) when an event is stored in one of the user's rooms,
//! and `added`/`removed` when their membership changes; never a message
//! body, and nothing it receives from the client means anything.
//!
//! How it hears of things, on any node:
//! - events: the socket subscribes to each of the user's rooms through the
//!   hub, exactly as a room socket does (so the node's one subscription per
//!   room serves both), and a small task per room marks the room dirty;
//! - membership changes and the user's own reads: published on the user's
//!   channel in the channel layer ([`user_channel`]), which every user
//!   socket of that user, on every node, subscribes to.
//!
//! Cost: connecting is O(rooms) (a hub join per room, one query for the
//! list); an event costs each connected member's user socket one indexed
//! read of its unread count (`ReadRepository::read_state`). Dirty rooms are
//! a set, so a burst in a room becomes one frame carrying the latest seq
//! and count, and a user socket that does not read holds no backlog.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use roomcast_broadcast::{Envelope, FeedError, RoomFeed};
use roomcast_domain::wire::{ChatEvent, ServerFrame};
use roomcast_domain::{Room, RoomId, RoomSlug, User, UserId, Username};
use roomcast_storage::ReadState;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::handshake::{Reason, Refusal, authenticate, with_limits};
use crate::state::ConnectionSlot;
use crate::{ApiError, AppState, ShutdownMode};

/// The channel-layer address of a user's own channel. The layer addresses
/// channels by room id; a user's channel reuses the user's id (ids are
/// random UUIDs, so they never meet a room's), and it has no event log:
/// only ephemeral frames travel on it.
pub(crate) fn user_channel(user: UserId) -> RoomId {
    RoomId::from_uuid(uuid::Uuid::from(user))
}

/// `host/slug`, as the user socket's frames name rooms.
fn address(room: &Room) -> String {
    format!("{}/{}", room.host, room.slug)
}

/// Tells `user`'s user sockets, on every node, that they were added to or
/// removed from `room`.
pub(crate) async fn membership_changed(app: &AppState, user: UserId, room: &Room, added: bool) {
    let room = address(room);
    let event = if added {
        ChatEvent::Added { room }
    } else {
        ChatEvent::Removed { room }
    };
    publish_to_user(app, user, event).await;
}

/// Tells `user`'s user sockets their new unread count after they read
/// `room` (from any socket or over HTTP).
pub(crate) async fn notify_read(app: &AppState, room: &Room, user: UserId, state: ReadState) {
    let event = activity(room, state);
    publish_to_user(app, user, event).await;
}

fn activity(room: &Room, state: ReadState) -> ChatEvent {
    ChatEvent::Activity {
        room: address(room),
        seq: state.last_seq,
        unread: state.unread,
    }
}

async fn publish_to_user(app: &AppState, user: UserId, event: ChatEvent) {
    let envelope = Envelope::Ephemeral {
        frame: Bytes::from(ServerFrame::Event(event).to_json()),
        from: None,
    };
    if let Err(e) = app.hub().publish(user_channel(user), envelope).await {
        tracing::debug!(error = %e, "user event not relayed to other nodes");
    }
}

/// The user socket's handshake: the room socket's authentication and
/// Origin checks (shared code), then the user's own channel and every room
/// of theirs are joined before the 101, so nothing stored after the client
/// sees the socket open is missed.
pub(crate) async fn ws_user(
    State(app): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match admit(&app, &headers, upgrade).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn admit(
    app: &AppState,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let (user_id, claims) = authenticate(app, headers)?;
    let user = app
        .storage()
        .user_by_id(user_id)
        .await?
        .ok_or_else(Refusal::unknown_user)?;
    let upgrade = upgrade.map_err(|rejection| Refusal::not_websocket(&rejection))?;
    let slot = app.try_connect(user.id).map_err(Refusal::connect_limit)?;
    let unavailable = |e: roomcast_broadcast::BroadcastError| {
        tracing::warn!(error = %e, "cannot join a user socket's channels");
        Refusal::new(
            Reason::Unavailable,
            ApiError::unavailable("Cannot follow your rooms right now; try again."),
        )
    };
    let own = app
        .hub()
        .join(user_channel(user.id))
        .await
        .map_err(unavailable)?;
    let watch = Watch::new(app);
    let rooms = match app.storage().room_list(user.id).await {
        Ok(rooms) => rooms,
        Err(e) => {
            app.hub().leave(own).await;
            return Err(e.into());
        }
    };
    for listing in rooms {
        if let Err(e) = watch.follow(app, listing.room).await {
            watch.stop();
            app.hub().leave(own).await;
            return Err(unavailable(e));
        }
    }
    let expires = time::OffsetDateTime::from_unix_timestamp(claims.exp).ok();
    let session = Session {
        user,
        own,
        watch,
        expires,
        _slot: slot,
    };
    let pending = Arc::new(Mutex::new(Some(session)));
    let on_failure = {
        let (pending, app) = (pending.clone(), app.clone());
        move |e: axum::Error| {
            tracing::debug!(error = %e, "user socket upgrade failed");
            let session = pending.lock().ok().and_then(|mut p| p.take());
            if let Some(session) = session {
                session.watch.stop();
                let hub = app.hub().clone();
                app.sockets()
                    .spawn(async move { hub.leave(session.own).await });
            }
        }
    };
    let tracker = app.sockets().clone();
    let app = app.clone();
    Ok(with_limits(upgrade, &app)
        .on_failed_upgrade(on_failure)
        .on_upgrade(move |socket| {
            let session = pending.lock().ok().and_then(|mut p| p.take());
            tracker.track_future(async move {
                if let Some(session) = session {
                    run(app, socket, session).await;
                }
            })
        }))
}

/// A user socket's state, from the handshake on.
struct Session {
    user: User,
    /// The user's own channel: membership changes and reads.
    own: RoomFeed,
    watch: Watch,
    expires: Option<time::OffsetDateTime>,
    _slot: ConnectionSlot,
}

/// The rooms a user socket follows: one task per room, each marking its
/// room dirty when an event is stored there.
struct Watch {
    rooms: Mutex<HashMap<RoomId, (Room, CancellationToken)>>,
    dirty: Arc<Mutex<HashSet<RoomId>>>,
    wake: Arc<Notify>,
    /// Ends every room task (the socket closed).
    stop: CancellationToken,
}

impl Watch {
    fn new(app: &AppState) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            dirty: Arc::default(),
            wake: Arc::default(),
            stop: app.shutdown_token().child_token(),
        }
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, (Room, CancellationToken)>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows `room` (again a no-op when already followed).
    async fn follow(
        &self,
        app: &AppState,
        room: Room,
    ) -> Result<(), roomcast_broadcast::BroadcastError> {
        if self.lock().contains_key(&room.id) {
            return Ok(());
        }
        let mut feed = app.hub().join(room.id).await?;
        let token = self.stop.child_token();
        self.lock().insert(room.id, (room.clone(), token.clone()));
        let (dirty, wake, hub, id) = (
            self.dirty.clone(),
            self.wake.clone(),
            app.hub().clone(),
            room.id,
        );
        app.sockets().spawn(async move {
            loop {
                let stored = tokio::select! {
                    () = token.cancelled() => break,
                    next = feed.recv() => match next {
                        Ok(Envelope::Event { .. }) | Err(FeedError::Lagged(_)) => true,
                        Ok(_) => false,
                        Err(FeedError::Closed) => break,
                    },
                };
                if stored {
                    dirty.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                    wake.notify_one();
                }
            }
            hub.leave(feed).await;
        });
        Ok(())
    }

    /// Stops following the room at `address`; its room, if it was followed.
    fn unfollow(&self, address_: &str) -> Option<Room> {
        let mut rooms = self.lock();
        let id = rooms
            .iter()
            .find(|(_, (room, _))| address(room) == address_)
            .map(|(id, _)| *id)?;
        let (room, token) = rooms.remove(&id)?;
        token.cancel();
        Some(room)
    }

    fn room(&self, id: RoomId) -> Option<Room> {
        self.lock().get(&id).map(|(room, _)| room.clone())
    }

    fn take_dirty(&self) -> Vec<RoomId> {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect()
    }
}

/// PROTOCOL.md section 5's codes this socket uses.
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;

async fn run(app: AppState, socket: WebSocket, mut session: Session) {
    crate::metrics::connection_opened();
    let (mut sink, mut stream) = socket.split();
    let expiry = session
        .expires
        .map(|at| {
            let left = (at - time::OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            tokio::time::Instant::now() + std::time::Duration::try_from(left).unwrap_or_default()
        })
        .unwrap_or_else(|| {
            tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365)
        });
    let shutdown = app.shutdown_token().clone();
    let end: Option<Option<CloseFrame>> = loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                break match app.config().shutdown_mode {
                    ShutdownMode::Drop => None,
                    _ => Some(Some(close(GOING_AWAY, "Server shutting down."))),
                };
            }
            () = tokio::time::sleep_until(expiry) => {
                break Some(Some(close(POLICY, "Token expired.")));
            }
            message = stream.next() => match message {
                // The client's close is answered with the same code.
                Some(Ok(Message::Close(frame))) => break Some(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            },
            next = session.own.recv() => {
                let frame = match next {
                    Ok(Envelope::Ephemeral { frame, .. }) => frame,
                    Ok(_) | Err(FeedError::Lagged(_)) => continue,
                    Err(FeedError::Closed) => break None,
                };
                if let Some(text) = own_event(&app, &session.watch, frame).await
                    && sink.send(Message::Text(text)).await.is_err()
                {
                    break None;
                }
            }
            () = session.watch.wake.notified() => {
                let mut failed = false;
                for id in session.watch.take_dirty() {
                    let Some(room) = session.watch.room(id) else { continue };
                    let state = match app.storage().read_state(id, session.user.id).await {
                        Ok(Some(state)) => state,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, "unread count unavailable");
                            continue;
                        }
                    };
                    let text = ServerFrame::Event(activity(&room, state)).to_json();
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    break None;
                }
            }
        }
    };
    if let Some(frame) = end {
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
    }
    session.watch.stop();
    app.hub().leave(session.own).await;
    crate::metrics::connection_closed();
}

fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

/// What a frame on the user's own channel means for this socket: follow a
/// room it was added to, stop following one it left; the frame itself goes
/// to the client either way.
async fn own_event(app: &AppState, watch: &Watch, frame: Bytes) -> Option<Utf8Bytes> {
    let text = Utf8Bytes::try_from(frame).ok()?;
    let event = match serde_json::from_str::<ServerFrame>(text.as_str()) {
        Ok(ServerFrame::Event(event)) => event,
        _ => return Some(text),
    };
    match &event {
        ChatEvent::Added { room } => {
            if let Some(found) = room_at(app, room).await
                && let Err(e) = watch.follow(app, found).await
            {
                tracing::warn!(error = %e, "cannot follow a room the user was added to");
            }
        }
        ChatEvent::Removed { room } => {
            watch.unfollow(room);
        }
        _ => {}
    }
    Some(text)
}

async fn room_at(app: &AppState, address: &str) -> Option<Room> {
    let (host, slug) = address.split_once('/')?;
    let host = Username::parse(host).ok()?;
    let slug = RoomSlug::parse(slug).ok()?;
    app.storage()
        .room_by_address(&host, &slug)
        .await
        .ok()
        .flatten()
}

/// The user socket, for the OpenAPI document (the frames are in
/// PROTOCOL.md section 7).
#[utoipa::path(get, path = "/ws/user", tag = "websocket", operation_id = "userSocket",
    responses((status = 101, description = "Upgraded to WebSocket: `activity`, `added` and `removed` events for every room of the user; the frames are in docs/protocol.md"),
        (status = 400, body = crate::api::dto::ErrorBody, description = "Not a WebSocket request"),
        (status = 401, body = crate::api::dto::ErrorBody, description = "Missing, invalid or expired token"),
        (status = 403, body = crate::api::dto::ErrorBody, description = "Origin not allowed"),
        (status = 503, body = crate::api::dto::ErrorBody, description = "At the connection limit, or storage down")))]
#[allow(dead_code)]
pub(crate) async fn ws_user_doc() {}
