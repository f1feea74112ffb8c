//! `PUT /api/rooms/{host}/{slug}/read`: the `read` frame over HTTP.

use axum::Json;
use axum::extract::{Path, State};

use super::dto::{ErrorBody, ReadRequest, ReadStateDto};
use super::extract::{CurrentUser, JsonBody};
use super::messages::participant_room;
use crate::{ApiError, AppState, reads};

/// Stores the caller's read position in the room: it only moves forward
/// and is clamped to the room's last seq. When it moves, the room's other
/// sockets get a read receipt, as for the `read` frame.
#[utoipa::path(put, path = "/api/rooms/{host}/{slug}/read", tag = "rooms", operation_id = "markRead",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    request_body = ReadRequest,
    responses((status = 200, body = ReadStateDto, description = "The caller's read state after the call"),
        (status = 400, body = ErrorBody, description = "`seq` missing or not a non-negative integer"),
        (status = 403, body = ErrorBody, description = "Not a participant"),
        (status = 404, body = ErrorBody, description = "No such room")))]
pub(crate) async fn mark_read(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
    JsonBody(req): JsonBody<ReadRequest>,
) -> Result<Json<ReadStateDto>, ApiError> {
    let room = participant_room(&app, &caller.user, &host, &slug).await?;
    let mark = reads::mark_read(&app, &room, &caller.user, req.seq)
        .await
        .map_err(|e| match e {
            roomcast_storage::StorageError::NotFound => {
                ApiError::forbidden("You are not a participant of this room.")
            }
            other => other.into(),
        })?;
    Ok(Json(mark.state.into()))
}
