//! Messages over HTTP: history, posting, editing and deleting, for people
//! (in rooms they take part in) and service keys (in any room, as their
//! bot user). Writes go through the `Publisher`, like every other door's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_domain::wire::{ChatMessage, ServerFrame};
use roomcast_domain::{BodyError, ClientId, Event, MessageBody, MessageId, Room, Scope, User};
use roomcast_storage::StorageError;
use serde::Deserialize;

use super::dto::{
    DeletedDto, EditMessageRequest, EditedDto, ErrorBody, HistoryDto, MessageDto,
    PostMessageRequest,
};
use super::extract::{Caller, JsonBody};
use super::rooms::{find_room, visible_room};
use crate::{ApiError, AppState, ErrorCode};

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
/// A service key with scope `read` reads any room.
#[utoipa::path(get, path = "/api/rooms/{host}/{slug}/messages", tag = "messages", operation_id = "listMessages",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"), HistoryQuery),
    security(("bearer" = []), ("cookie" = []), ("serviceKey" = ["read"])),
    responses((status = 200, body = HistoryDto, description = "A page of messages"),
        (status = 400, body = ErrorBody, description = "Invalid `before` or `limit`"),
        (status = 401, body = ErrorBody, description = "No valid token, or an unknown or revoked service key"),
        (status = 403, body = ErrorBody, description = "Not a participant, or a service key without scope `read` (`insufficient_scope`)"),
        (status = 404, body = ErrorBody, description = "No such room, or no such `before` message")))]
pub(crate) async fn history(
    State(app): State<AppState>,
    caller: Caller,
    Path((host, slug)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryDto>, ApiError> {
    let room = room_for(&app, &caller, &host, &slug, Scope::Read).await?;
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
            StorageError::NotFound => ApiError::not_found("Message not found."),
            other => other.into(),
        })?;
    Ok(Json(HistoryDto {
        messages: page.iter().map(MessageDto::from).collect(),
        last_seq,
    }))
}

/// Post a message: stored and broadcast like a `text` frame.
///
/// A person posts in rooms they take part in; a service key with scope
/// `publish` posts in any room, as its bot user.
#[utoipa::path(post, path = "/api/rooms/{host}/{slug}/messages", tag = "messages", operation_id = "postMessage",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug")),
    security(("bearer" = []), ("cookie" = []), ("serviceKey" = ["publish"])),
    request_body = PostMessageRequest,
    responses((status = 201, body = MessageDto, description = "Stored and broadcast"),
        (status = 200, body = MessageDto, description = "This clientId was used before: the original message"),
        (status = 400, body = ErrorBody, description = "Empty or too long body (`empty`, `too_long`), or an invalid clientId"),
        (status = 401, body = ErrorBody, description = "No valid token, or an unknown or revoked service key"),
        (status = 403, body = ErrorBody, description = "Not a participant, or a service key without scope `publish` (`insufficient_scope`)"),
        (status = 404, body = ErrorBody, description = "No such room, or a private room the caller is not in"),
        (status = 429, body = ErrorBody, description = "The caller's message rate (shared with their sockets) is spent; nothing was stored; see Retry-After")))]
pub(crate) async fn post(
    State(app): State<AppState>,
    caller: Caller,
    Path((host, slug)): Path<(String, String)>,
    JsonBody(req): JsonBody<PostMessageRequest>,
) -> Result<Response, ApiError> {
    let room = room_for(&app, &caller, &host, &slug, Scope::Publish).await?;
    let body = parse_body(&req.body)?;
    let client_id = req
        .client_id
        .map(ClientId::parse)
        .transpose()
        .map_err(|_| ApiError::bad_request("clientId must be 1 to 64 characters."))?;
    spend_message(&app, caller.user())?;
    let posted = app
        .publisher()
        .post(room.id, caller.user(), body, client_id)
        .await?;
    let status = if posted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    match ServerFrame::from_event(&posted.event) {
        ServerFrame::Message(ChatMessage::New(frame)) => {
            Ok((status, Json(MessageDto::from(frame))).into_response())
        }
        _ => Err(unexpected(&posted.event)),
    }
}

/// Edit one's own message: stored and broadcast like an `update` frame.
#[utoipa::path(patch, path = "/api/rooms/{host}/{slug}/messages/{id}", tag = "messages", operation_id = "editMessage",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"), ("id" = String, Path, description = "The message's id")),
    security(("bearer" = []), ("cookie" = []), ("serviceKey" = ["publish"])),
    request_body = EditMessageRequest,
    responses((status = 200, body = EditedDto, description = "Stored and broadcast"),
        (status = 400, body = ErrorBody, description = "Empty or too long body (`empty`, `too_long`)"),
        (status = 401, body = ErrorBody, description = "No valid token, or an unknown or revoked service key"),
        (status = 403, body = ErrorBody, description = "Not the message's author, not a participant, or a service key without scope `publish` (`insufficient_scope`)"),
        (status = 404, body = ErrorBody, description = "No such room or message"),
        (status = 429, body = ErrorBody, description = "The caller's message rate is spent; nothing was stored; see Retry-After")))]
pub(crate) async fn edit(
    State(app): State<AppState>,
    caller: Caller,
    Path((host, slug, id)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<EditMessageRequest>,
) -> Result<Json<EditedDto>, ApiError> {
    let room = room_for(&app, &caller, &host, &slug, Scope::Publish).await?;
    let id = message_id(&id)?;
    let body = parse_body(&req.body)?;
    spend_message(&app, caller.user())?;
    let event = app
        .publisher()
        .edit(room.id, caller.user().id, id, body)
        .await
        .map_err(|e| refusal(e, "You can only edit your own messages."))?;
    match ServerFrame::from_event(&event) {
        ServerFrame::Message(ChatMessage::Update(frame)) => Ok(Json(EditedDto::from(frame))),
        _ => Err(unexpected(&event)),
    }
}

/// Delete one's own message: stored and broadcast like a `delete` frame.
#[utoipa::path(delete, path = "/api/rooms/{host}/{slug}/messages/{id}", tag = "messages", operation_id = "deleteMessage",
    params(("host" = String, Path, description = "The host's username"), ("slug" = String, Path, description = "The room's slug"), ("id" = String, Path, description = "The message's id")),
    security(("bearer" = []), ("cookie" = []), ("serviceKey" = ["publish"])),
    responses((status = 200, body = DeletedDto, description = "Stored and broadcast"),
        (status = 401, body = ErrorBody, description = "No valid token, or an unknown or revoked service key"),
        (status = 403, body = ErrorBody, description = "Not the message's author, not a participant, or a service key without scope `publish` (`insufficient_scope`)"),
        (status = 404, body = ErrorBody, description = "No such room or message"),
        (status = 429, body = ErrorBody, description = "The caller's message rate is spent; nothing was stored; see Retry-After")))]
pub(crate) async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path((host, slug, id)): Path<(String, String, String)>,
) -> Result<Json<DeletedDto>, ApiError> {
    let room = room_for(&app, &caller, &host, &slug, Scope::Publish).await?;
    let id = message_id(&id)?;
    spend_message(&app, caller.user())?;
    let event = app
        .publisher()
        .delete(room.id, caller.user().id, id)
        .await
        .map_err(|e| refusal(e, "You can only delete your own messages."))?;
    match ServerFrame::from_event(&event) {
        ServerFrame::Message(ChatMessage::Delete(frame)) => Ok(Json(DeletedDto::from(frame))),
        _ => Err(unexpected(&event)),
    }
}

/// The room at `host`/`slug` as `caller` may write to (or read) it. A
/// person must take part in it (a private room they are not in is 404,
/// as for no room). A service key must hold `scope` (403
/// `insufficient_scope`) and then reaches any room, private ones
/// included, without taking part in it: the operator who made the key
/// decided that, and its posts name its bot user for everyone to see.
async fn room_for(
    app: &AppState,
    caller: &Caller,
    host: &str,
    slug: &str,
    scope: Scope,
) -> Result<Room, ApiError> {
    match caller {
        Caller::Person(user) => participant_room(app, user, host, slug).await,
        Caller::Service(key) if key.scopes.contains(scope) => find_room(app, host, slug).await,
        Caller::Service(key) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            format!(
                "This service key has scope `{}`; this needs `{scope}`.",
                key.scopes
            ),
        )),
    }
}

pub(crate) async fn participant_room(
    app: &AppState,
    caller: &User,
    host: &str,
    slug: &str,
) -> Result<Room, ApiError> {
    let (room, participant) = visible_room(app, caller, host, slug).await?;
    if !participant {
        return Err(ApiError::forbidden(
            "You are not a participant of this room.",
        ));
    }
    Ok(room)
}

fn parse_body(body: &str) -> Result<MessageBody, ApiError> {
    MessageBody::parse(body).map_err(|e| {
        let code = match e {
            BodyError::Empty => ErrorCode::Empty,
            BodyError::TooLong => ErrorCode::TooLong,
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })
}

fn message_id(id: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(id).map_err(|_| ApiError::not_found("Message not found."))
}

/// Takes one message from the user's budget, shared with their sockets
/// (a key's budget is its bot user's); 429 when spent.
fn spend_message(app: &AppState, user: &User) -> Result<(), ApiError> {
    app.limits().message(user.id).map_err(|wait| {
        crate::metrics::rate_limited("message");
        ApiError::rate_limited("Too many messages; nothing was stored.", wait)
    })
}

/// An edit's or delete's refusal, in the seed's sentences.
fn refusal(e: StorageError, not_author: &str) -> ApiError {
    match e {
        StorageError::NotFound => ApiError::not_found("Message not found."),
        StorageError::Forbidden => ApiError::forbidden(not_author),
        other => other.into(),
    }
}

fn unexpected(event: &Event) -> ApiError {
    tracing::error!(seq = %event.seq, "a write answered with an event of another kind");
    ApiError::unavailable("Unexpected stored event.")
}
