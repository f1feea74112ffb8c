//! Who is in a room now, over HTTP: the list a socket gets as its
//! `presence` frame.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::dto::ErrorBody;
use super::extract::CurrentUser;
use super::messages::participant_room;
use crate::{ApiError, AppState};

/// The usernames with at least one open socket in the room, on any node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PresenceDto {
    pub users: Vec<String>,
}

/// Who is in the room now: the usernames with an open socket in it, on any
/// node (the list a socket gets as its `presence` frame).
#[utoipa::path(get, path = "/api/rooms/{host}/{slug}/presence", tag = "rooms", operation_id = "getPresence",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    responses((status = 200, body = PresenceDto, description = "The users present, sorted"),
        (status = 403, body = ErrorBody, description = "Not a participant"),
        (status = 404, body = ErrorBody, description = "No such room"),
        (status = 503, body = ErrorBody, description = "The channel layer is unreachable")))]
pub(crate) async fn presence(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
) -> Result<Json<PresenceDto>, ApiError> {
    let room = participant_room(&app, &caller.user, &host, &slug).await?;
    let users = app.hub().presence(room.id).await.map_err(|e| {
        tracing::warn!(error = %e, room = %room.id, "presence unavailable");
        ApiError::unavailable("Presence is unavailable right now; try again.")
    })?;
    Ok(Json(PresenceDto {
        users: users.iter().map(|u| u.as_str().to_owned()).collect(),
    }))
}
