//! Rooms and their participants.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_domain::{Room, RoomSlug, User, Username, Visibility};
use roomcast_storage::NewRoom;

use super::dto::{CreateRoomRequest, ErrorBody, RoomDetailDto, RoomDto, RoomListingDto, UserDto};
use super::extract::{CurrentUser, JsonBody};
use crate::{ApiError, AppState, user_feed};

const MAX_ROOM_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 2000;

/// Create a room hosted by the caller, its first participant.
#[utoipa::path(post, path = "/api/rooms", tag = "rooms", operation_id = "createRoom",
    request_body = CreateRoomRequest,
    responses((status = 201, body = RoomDto, description = "Created"),
        (status = 400, body = ErrorBody, description = "Invalid name or slug"),
        (status = 409, body = ErrorBody, description = "The caller already hosts a room with that slug")))]
pub(crate) async fn create(
    State(app): State<AppState>,
    caller: CurrentUser,
    JsonBody(req): JsonBody<CreateRoomRequest>,
) -> Result<Response, ApiError> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_ROOM_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "A room name is 1 to {MAX_ROOM_NAME_CHARS} characters."
        )));
    }
    let slug = match req.slug.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => {
            RoomSlug::parse(s).map_err(|e| ApiError::bad_request(format!("Invalid slug: {e}.")))?
        }
        None => RoomSlug::slugify(&name).ok_or_else(|| {
            ApiError::bad_request("No slug can be made from this name; give one.")
        })?,
    };
    let visibility = match req.visibility.as_deref() {
        None => Visibility::default(),
        Some(v) => Visibility::parse(v)
            .map_err(|_| ApiError::bad_request("`visibility` is `public` or `private`."))?,
    };
    let description = req.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "A description is at most {MAX_DESCRIPTION_CHARS} characters."
        )));
    }
    let room = app
        .storage()
        .create_room(NewRoom {
            host: caller.user.id,
            slug,
            name,
            description,
            visibility,
        })
        .await
        .map_err(|e| match e {
            roomcast_storage::StorageError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                crate::ErrorCode::Conflict,
                "You already host a room with that slug.",
            ),
            other => other.into(),
        })?;
    user_feed::membership_changed(&app, caller.user.id, &room, true).await;
    Ok((StatusCode::CREATED, Json(RoomDto::from(&room))).into_response())
}

/// The rooms the caller participates in, newest first, each with
/// `last_seq`, the caller's `read_seq` and `unread` (one row per room: the
/// counts are kept by the database, never counted from messages here).
#[utoipa::path(get, path = "/api/rooms", tag = "rooms", operation_id = "listRooms",
    responses((status = 200, body = [RoomListingDto], description = "The caller's rooms with their read state")))]
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: CurrentUser,
) -> Result<Json<Vec<RoomListingDto>>, ApiError> {
    let rooms = app.storage().room_list(caller.user.id).await?;
    Ok(Json(rooms.iter().map(RoomListingDto::from).collect()))
}

/// A room, with its participants and the last seq of its event log.
#[utoipa::path(get, path = "/api/rooms/{host}/{slug}", tag = "rooms", operation_id = "getRoom",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    responses((status = 200, body = RoomDetailDto, description = "The room"),
        (status = 404, body = ErrorBody, description = "No such room, or a private room the caller is not in")))]
pub(crate) async fn get_one(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
) -> Result<Json<RoomDetailDto>, ApiError> {
    let (room, _) = visible_room(&app, &caller.user, &host, &slug).await?;
    Ok(Json(detail(&app, &room).await?))
}

/// Join a room as a participant.
#[utoipa::path(post, path = "/api/rooms/{host}/{slug}/join", tag = "rooms", operation_id = "joinRoom",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    responses((status = 200, body = RoomDetailDto, description = "Joined (or already a participant)"),
        (status = 403, body = ErrorBody, description = "A private room (its host adds participants), or the host removed the caller"),
        (status = 404, body = ErrorBody, description = "No such room")))]
pub(crate) async fn join(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
) -> Result<Json<RoomDetailDto>, ApiError> {
    let room = find_room(&app, &host, &slug).await?;
    if !app
        .storage()
        .is_participant(room.id, caller.user.id)
        .await?
    {
        if room.visibility == Visibility::Private {
            return Err(ApiError::forbidden(
                "This room is private: its host adds participants.",
            ));
        }
        if app.storage().is_banned(room.id, caller.user.id).await? {
            return Err(ApiError::forbidden(
                "The host removed you from this room; only they can add you back.",
            ));
        }
        if app
            .storage()
            .add_participant(room.id, caller.user.id)
            .await?
        {
            user_feed::membership_changed(&app, caller.user.id, &room, true).await;
        }
    }
    let room = find_room(&app, &host, &slug).await?;
    Ok(Json(detail(&app, &room).await?))
}

/// Leave a room; the caller's sockets in it are closed (1008).
#[utoipa::path(post, path = "/api/rooms/{host}/{slug}/leave", tag = "rooms", operation_id = "leaveRoom",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    responses((status = 204, description = "Left; the caller's sockets in the room are closed (1008)"),
        (status = 404, body = ErrorBody, description = "No such room")))]
pub(crate) async fn leave(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (room, _) = visible_room(&app, &caller.user, &host, &slug).await?;
    if app
        .storage()
        .remove_participant(room.id, caller.user.id)
        .await?
    {
        user_feed::membership_changed(&app, caller.user.id, &room, false).await;
    }
    evict(&app, &room, &caller.user).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a participant (host only).
#[utoipa::path(put, path = "/api/rooms/{host}/{slug}/participants/{username}", tag = "rooms", operation_id = "addParticipant",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"), ("username" = String, Path, description = "Who to add")),
    responses((status = 200, body = RoomDetailDto, description = "Added (or already a participant), lifting any earlier removal"),
        (status = 403, body = ErrorBody, description = "The caller is not the host"),
        (status = 404, body = ErrorBody, description = "No such room or user")))]
pub(crate) async fn add_participant(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug, username)): Path<(String, String, String)>,
) -> Result<Json<RoomDetailDto>, ApiError> {
    let room = hosted_room(&app, &caller, &host, &slug).await?;
    let user = find_user(&app, &username).await?;
    if app.storage().readmit_participant(room.id, user.id).await? {
        user_feed::membership_changed(&app, user.id, &room, true).await;
    }
    let room = find_room(&app, &host, &slug).await?;
    Ok(Json(detail(&app, &room).await?))
}

/// Remove a participant (host only); their sockets in the room are closed (1008).
#[utoipa::path(delete, path = "/api/rooms/{host}/{slug}/participants/{username}", tag = "rooms", operation_id = "removeParticipant",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"), ("username" = String, Path, description = "Who to remove")),
    responses((status = 204, description = "Removed; their sockets in the room are closed (1008), and they cannot join again until the host adds them"),
        (status = 403, body = ErrorBody, description = "The caller is not the host"),
        (status = 404, body = ErrorBody, description = "No such room or user")))]
pub(crate) async fn remove_participant(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug, username)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let room = hosted_room(&app, &caller, &host, &slug).await?;
    let user = find_user(&app, &username).await?;
    if user.id == caller.user.id {
        return Err(ApiError::bad_request("The host cannot remove themselves."));
    }
    if !app.storage().ban_participant(room.id, user.id).await? {
        return Err(ApiError::not_found("That user is not a participant."));
    }
    user_feed::membership_changed(&app, user.id, &room, false).await;
    evict(&app, &room, &user).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes the user's sockets in the room on every node (1008).
async fn evict(app: &AppState, room: &Room, user: &User) {
    if let Err(e) = app.hub().evict(room.id, user.id).await {
        // This node's sockets are closed already; other nodes' close when
        // the layer is back (their next membership check is the handshake).
        tracing::warn!(error = %e, room = %room.id, "eviction not relayed to other nodes");
    }
}

/// The room at `host`/`slug`, whoever asks: callers check what the asker
/// may see ([`visible_room`]).
pub(crate) async fn find_room(app: &AppState, host: &str, slug: &str) -> Result<Room, ApiError> {
    let missing = || ApiError::not_found("Room not found.");
    let host = Username::parse(host).map_err(|_| missing())?;
    let slug = RoomSlug::parse(slug).map_err(|_| missing())?;
    app.storage()
        .room_by_address(&host, &slug)
        .await?
        .ok_or_else(missing)
}

/// The room at `host`/`slug` as `caller` may see it, and whether they take
/// part in it. A private room they are not in does not exist for them:
/// 404, as for no room at all, so its address reveals nothing.
pub(crate) async fn visible_room(
    app: &AppState,
    caller: &User,
    host: &str,
    slug: &str,
) -> Result<(Room, bool), ApiError> {
    let room = find_room(app, host, slug).await?;
    let participant = app.storage().is_participant(room.id, caller.id).await?;
    if !participant && room.visibility == Visibility::Private {
        return Err(ApiError::not_found("Room not found."));
    }
    Ok((room, participant))
}

/// The room, if the caller hosts it.
async fn hosted_room(
    app: &AppState,
    caller: &CurrentUser,
    host: &str,
    slug: &str,
) -> Result<Room, ApiError> {
    let (room, _) = visible_room(app, &caller.user, host, slug).await?;
    if room.host != caller.user.username {
        return Err(ApiError::forbidden(
            "Only the room's host may change its participants.",
        ));
    }
    Ok(room)
}

async fn find_user(app: &AppState, username: &str) -> Result<User, ApiError> {
    let missing = || ApiError::not_found("No such user.");
    let username = Username::parse(username).map_err(|_| missing())?;
    app.storage()
        .user_by_username(&username)
        .await?
        .ok_or_else(missing)
}

async fn detail(app: &AppState, room: &Room) -> Result<RoomDetailDto, ApiError> {
    let participants = app.storage().participants(room.id).await?;
    let last_seq = app.storage().last_seq(room.id).await?;
    Ok(RoomDetailDto {
        room: RoomDto::from(room),
        participants: participants.iter().map(UserDto::from).collect(),
        last_seq,
    })
}
