//! Message history and posting over HTTP.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_domain::wire::{ChatMessage, ServerFrame};
use roomcast_domain::{BodyError, ClientId, MessageBody, MessageId, Room};
use serde::Deserialize;

use super::dto::{ErrorBody, HistoryDto, MessageDto, PostMessageRequest};
use super::extract::{CurrentUser, JsonBody};
use super::rooms::visible_room;
use crate::{ApiError, AppState, ErrorCode, chat};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// A message id: only messages created before it.
    before: Option<String>,
    /// Page size, at most 100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// A page of the room's messages, oldest first, and the room's last seq.
///
/// Page back with `before` set to the oldest message id of the last page.
#[utoipa::path(get, path = "/api/rooms/{host}/{slug}/messages", tag = "messages", operation_id = "listMessages",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"), HistoryQuery),
    responses((status = 200, body = HistoryDto, description = "A page of messages"),
        (status = 400, body = ErrorBody, description = "Invalid `before` or `limit`"),
        (status = 403, body = ErrorBody, description = "Not a participant"),
        (status = 404, body = ErrorBody, description = "No such room, or no such `before` message")))]
pub(crate) async fn history(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryDto>, ApiError> {
    let room = participant_room(&app, &caller, &host, &slug).await?;
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| ApiError::bad_request("`limit` must be a whole number from 1 to 100."))?
            .min(MAX_PAGE),
    };
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(
            MessageId::parse(b)
                .map_err(|_| ApiError::bad_request("`before` must be a message id."))?,
        ),
    };
    // Read the position first: every message of the page is at or below it.
    let last_seq = app.storage().last_seq(room.id).await?;
    let page = app
        .storage()
        .history(room.id, before, limit)
        .await
        .map_err(|e| match e {
            roomcast_storage::StorageError::NotFound => ApiError::not_found("Message not found."),
            other => other.into(),
        })?;
    Ok(Json(HistoryDto {
        messages: page.iter().map(MessageDto::from).collect(),
        last_seq,
    }))
}

/// Post a message as the caller: stored and broadcast like a `text` frame.
#[utoipa::path(post, path = "/api/rooms/{host}/{slug}/messages", tag = "messages", operation_id = "postMessage",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    request_body = PostMessageRequest,
    responses((status = 201, body = MessageDto, description = "Stored and broadcast"),
        (status = 200, body = MessageDto, description = "This clientId was used before: the original message"),
        (status = 400, body = ErrorBody, description = "Empty or too long body (`empty`, `too_long`), or an invalid clientId"),
        (status = 403, body = ErrorBody, description = "Not a participant"),
        (status = 404, body = ErrorBody, description = "No such room, or a private room the caller is not in"),
        (status = 429, body = ErrorBody, description = "The caller's message rate (shared with their sockets) is spent; nothing was stored; see Retry-After")))]
pub(crate) async fn post(
    State(app): State<AppState>,
    caller: CurrentUser,
    Path((host, slug)): Path<(String, String)>,
    JsonBody(req): JsonBody<PostMessageRequest>,
) -> Result<Response, ApiError> {
    let room = participant_room(&app, &caller, &host, &slug).await?;
    let body = MessageBody::parse(&req.body).map_err(|e| {
        let code = match e {
            BodyError::Empty => ErrorCode::Empty,
            BodyError::TooLong => ErrorCode::TooLong,
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })?;
    let client_id = req
        .client_id
        .map(ClientId::parse)
        .transpose()
        .map_err(|_| ApiError::bad_request("clientId must be 1 to 64 characters."))?;
    if let Err(wait) = app.limits().message(caller.user.id) {
        crate::metrics::rate_limited("message");
        return Err(ApiError::rate_limited(
            "Too many messages; nothing was stored.",
            wait,
        ));
    }
    let posted = chat::post(&app, &caller.user, &room, body, client_id).await?;
    let status = if posted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    match ServerFrame::from_event(&posted.event) {
        ServerFrame::Message(ChatMessage::New(frame)) => {
            Ok((status, Json(MessageDto::from(frame))).into_response())
        }
        _ => Err(ApiError::unavailable("Unexpected stored event.")),
    }
}

pub(crate) async fn participant_room(
    app: &AppState,
    caller: &CurrentUser,
    host: &str,
    slug: &str,
) -> Result<Room, ApiError> {
    let (room, participant) = visible_room(app, &caller.user, host, slug).await?;
    if !participant {
        return Err(ApiError::forbidden(
            "You are not a participant of this room.",
        ));
    }
    Ok(room)
}
