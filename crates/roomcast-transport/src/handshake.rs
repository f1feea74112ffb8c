//! `GET /ws/chat/{host}/{slug}`: every check happens before the upgrade, so
//! a refusal is a plain HTTP status with a JSON body (PROTOCOL.md section 1).

use std::sync::{Arc, Mutex};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use roomcast_broadcast::RoomFeed;
use roomcast_domain::{Room, RoomSlug, Seq, User, Username, Visibility};
use serde::Deserialize;
use tracing::Instrument;

use crate::auth::token_from;
use crate::consumer::{self, Session};
use crate::state::ConnectLimit;
use crate::{ApiError, AppState, ErrorBody};

#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    since: Option<String>,
}

pub(crate) async fn ws_chat(
    State(app): State<AppState>,
    Path((host, slug)): Path<(String, String)>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match admit(&app, &host, &slug, &query, &headers).await {
        Err(refusal) => {
            tracing::debug!(status = %refusal.error.status, code = %refusal.error.code, %host, %slug, "handshake refused");
            refusal.into_response()
        }
        Ok(Admitted {
            user,
            room,
            since,
            expires,
            login,
        }) => {
            let upgrade = match upgrade {
                Ok(u) => u,
                Err(rejection) => return Refusal::not_websocket(&rejection).into_response(),
            };
            let slot = match app.try_connect(user.id) {
                Ok(slot) => slot,
                Err(limit) => return Refusal::connect_limit(limit).into_response(),
            };
            // Join the room and read its position before answering the
            // handshake: a client that sees 101 gets every event stored
            // after that, even one posted the next instant by someone else.
            let (feed, current, first_kept) = match join_at_current(&app, &room, since).await {
                Ok(joined) => joined,
                Err(e) => return Refusal::new(Reason::Unavailable, e).into_response(),
            };
            // Built once and boxed: the upgrade task then holds a pointer,
            // not copies of the user and room at each stage of its future.
            let session = Box::new(Session {
                user,
                room,
                since,
                expires,
                login,
                slot,
                feed,
                current,
                first_kept,
            });
            // The session goes to the socket, or its feed back to the hub
            // if the upgrade fails (the client vanished mid-handshake).
            let pending = Arc::new(Mutex::new(Some(session)));
            let on_failure = {
                let (pending, app) = (pending.clone(), app.clone());
                move |e: axum::Error| {
                    tracing::debug!(error = %e, "upgrade failed");
                    let session = pending.lock().ok().and_then(|mut p| p.take());
                    if let Some(session) = session {
                        let hub = app.hub().clone();
                        app.sockets()
                            .spawn(async move { hub.leave(session.feed).await });
                    }
                }
            };
            let tracker = app.sockets().clone();
            // The socket's lines carry the handshake's request id and user.
            let span = tracing::Span::current();
            with_limits(upgrade, &app)
                .on_failed_upgrade(on_failure)
                .on_upgrade(move |socket| {
                    let session = pending.lock().ok().and_then(|mut p| p.take());
                    // Split here, so the socket's future holds two handles
                    // rather than the whole WebSocket.
                    let (sink, stream) = socket.split();
                    tracker.track_future(
                        async move {
                            let Some(session) = session else { return };
                            consumer::run(app, sink, stream, session).await;
                        }
                        .instrument(span),
                    )
                })
        }
    }
}

/// Who may connect where, once the checks pass.
struct Admitted {
    user: User,
    room: Room,
    since: Option<Seq>,
    /// When the token expires: the socket closes then (1008).
    expires: Option<time::OffsetDateTime>,
    /// The login session: the socket closes if it is logged out (1008).
    login: Option<roomcast_domain::RefreshFamily>,
}

/// The checks of PROTOCOL.md section 1, in its order.
async fn admit(
    app: &AppState,
    host: &str,
    slug: &str,
    query: &WsQuery,
    headers: &HeaderMap,
) -> Result<Admitted, Refusal> {
    let (user_id, claims) = authenticate(app, headers)?;
    let since = match &query.since {
        None => None,
        Some(s) => Some(s.parse::<Seq>().map_err(|_| {
            Refusal::new(
                Reason::BadRequest,
                ApiError::bad_request("`since` must be a non-negative integer."),
            )
        })?),
    };
    let unknown_user = Refusal::unknown_user;
    let room_missing =
        || Refusal::new(Reason::RoomNotFound, ApiError::not_found("Room not found."));
    let (host, slug) = match (Username::parse(host), RoomSlug::parse(slug)) {
        (Ok(host), Ok(slug)) => (host, slug),
        // No room can be at this address; the user is still checked first.
        _ => {
            app.storage()
                .user_by_id(user_id)
                .await?
                .ok_or_else(unknown_user)?;
            return Err(room_missing());
        }
    };
    // One round trip for the user, the room and the membership.
    let admission = app.storage().admission(user_id, &host, &slug).await?;
    let user = admission.user.ok_or_else(unknown_user)?;
    crate::access::identified(user.id);
    let room = admission.room.ok_or_else(room_missing)?;
    if !admission.participant {
        // A private room does not exist for those outside it.
        if room.visibility == Visibility::Private {
            return Err(Refusal::new(
                Reason::RoomNotFound,
                ApiError::not_found("Room not found."),
            ));
        }
        return Err(Refusal::new(
            Reason::NotParticipant,
            ApiError::forbidden("You are not a participant of this room."),
        ));
    }
    Ok(Admitted {
        user,
        room,
        since,
        expires: time::OffsetDateTime::from_unix_timestamp(claims.exp).ok(),
        login: claims.session(),
    })
}

/// The first checks of every WebSocket handshake (the room socket's and the
/// user socket's), in PROTOCOL.md's order: a valid token (401), then an
/// allowed `Origin` (403, cross-site WebSocket hijacking).
pub(crate) fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<(roomcast_domain::UserId, crate::Claims), Refusal> {
    let token = token_from(headers).ok_or_else(|| {
        Refusal::new(
            Reason::Unauthorized,
            ApiError::unauthorized("Authentication required."),
        )
    })?;
    let (user_id, claims) = app.keys().verify(&token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        Refusal::unknown_user()
    })?;
    if claims
        .session()
        .is_some_and(|s| app.sessions().is_revoked(s))
    {
        return Err(Refusal::new(
            Reason::Unauthorized,
            ApiError::unauthorized("This session has ended; log in again."),
        ));
    }
    let origin = headers.get(ORIGIN).map(|v| v.to_str().unwrap_or("\u{0}"));
    if !app.config().allowed_origins.allows(origin) {
        return Err(Refusal::new(
            Reason::Origin,
            ApiError::forbidden("Origin not allowed."),
        ));
    }
    Ok((user_id, claims))
}

/// A refused WebSocket handshake: the HTTP answer, and why, for the
/// refusal metric. The reason is named where the refusal is decided,
/// never read back from the answer's wording.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: Reason,
    pub(crate) error: ApiError,
}

/// The refusal metric's label values (low cardinality by construction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Unauthorized,
    Origin,
    NotParticipant,
    RoomNotFound,
    BadRequest,
    Overloaded,
    UserLimit,
    Unavailable,
}

impl Reason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::Origin => "origin",
            Reason::NotParticipant => "not_participant",
            Reason::RoomNotFound => "room_not_found",
            Reason::BadRequest => "bad_request",
            Reason::Overloaded => "overloaded",
            Reason::UserLimit => "user_limit",
            Reason::Unavailable => "unavailable",
        }
    }
}

impl Refusal {
    pub(crate) fn new(reason: Reason, error: ApiError) -> Self {
        Self { reason, error }
    }

    /// A token for a user that does not exist (any more), or an invalid one.
    pub(crate) fn unknown_user() -> Self {
        Self::new(
            Reason::Unauthorized,
            ApiError::unauthorized("Invalid or expired token."),
        )
    }

    /// A plain HTTP request on a WebSocket endpoint.
    pub(crate) fn not_websocket(rejection: &WebSocketUpgradeRejection) -> Self {
        Self::new(
            Reason::BadRequest,
            ApiError::new(
                rejection.status(),
                crate::ErrorCode::BadRequest,
                "This endpoint speaks WebSocket only.",
            ),
        )
    }

    /// The node is at its connection limit.
    pub(crate) fn overloaded() -> Self {
        Self::new(
            Reason::Overloaded,
            ApiError::unavailable("The server is at its connection limit."),
        )
    }

    /// A connection limit was reached: the node's (503) or the user's own
    /// (429).
    pub(crate) fn connect_limit(limit: ConnectLimit) -> Self {
        match limit {
            ConnectLimit::Node => Self::overloaded(),
            ConnectLimit::User => Self::new(
                Reason::UserLimit,
                ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    crate::ErrorCode::RateLimited,
                    "You have too many connections open; close one first.",
                ),
            ),
        }
    }
}

/// Storage failed while checking: the request's answer as for any API
/// call (mostly 503), counted as unavailable.
impl From<roomcast_storage::StorageError> for Refusal {
    fn from(e: roomcast_storage::StorageError) -> Self {
        Self::new(Reason::Unavailable, e.into())
    }
}

impl IntoResponse for Refusal {
    /// Counts the refusal, then answers it.
    fn into_response(self) -> Response {
        crate::metrics::handshake_refused(self.reason.label());
        self.error.into_response()
    }
}

/// An upgrade with the server's socket limits (buffers, message size).
pub(crate) fn with_limits(upgrade: WebSocketUpgrade, app: &AppState) -> WebSocketUpgrade {
    let config = app.config();
    upgrade
        .read_buffer_size(config.socket_buffer_bytes)
        .write_buffer_size(config.socket_buffer_bytes)
        .max_write_buffer_size(config.max_write_buffer_bytes)
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes)
}

/// Subscribes to the room's feed, then reads where the room stands: its
/// last seq and, for a resume, the oldest seq still in its log (one round
/// trip either way).
async fn join_at_current(
    app: &AppState,
    room: &Room,
    since: Option<Seq>,
) -> Result<(RoomFeed, Seq, Seq), ApiError> {
    let feed = app.hub().join(room.id).await.map_err(|e| {
        tracing::warn!(error = %e, room = %room.id, "cannot join room group");
        ApiError::unavailable("Cannot join the room right now; try again.")
    })?;
    let position = match since {
        Some(_) => app.storage().log_bounds(room.id).await,
        None => app
            .storage()
            .last_seq(room.id)
            .await
            .map(|s| (s, Seq::new(1))),
    };
    match position {
        Ok((current, first_kept)) => Ok((feed, current, first_kept)),
        Err(e) => {
            app.hub().leave(feed).await;
            Err(e.into())
        }
    }
}

/// Open the room's WebSocket: the chat consumer.
///
/// Authenticate with the `JWT` cookie or a bearer token; browsers must
/// send an allowed `Origin`. The frames are in docs/protocol.md. (This
/// function only carries the OpenAPI description: `ws_chat` serves it.)
#[utoipa::path(get, path = "/ws/chat/{host}/{slug}", tag = "websocket", operation_id = "roomSocket",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"),
        ("since" = Option<u64>, Query, description = "Resume: replay the events after this seq, then `synced`")),
    responses((status = 101, description = "Upgraded to WebSocket; the frames are in docs/protocol.md"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket request, or an invalid `since`"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or expired token"),
        (status = 403, body = ErrorBody, description = "Origin not allowed, or not a participant"),
        (status = 404, body = ErrorBody, description = "No such room, or a private room the caller is not in"),
        (status = 429, body = ErrorBody, description = "The user has too many sockets open"),
        (status = 503, body = ErrorBody, description = "At the connection limit, or storage down")))]
#[allow(dead_code)]
pub(crate) async fn ws_chat_doc() {}
