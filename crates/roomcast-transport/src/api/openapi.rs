//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use super::{accounts, dto, messages, rooms};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Roomcast",
        description = "Real-time room chat: HTTP API. The WebSocket protocol is in PROTOCOL.md."
    ),
    paths(
        accounts::register,
        accounts::login,
        accounts::refresh,
        accounts::logout,
        accounts::me,
        rooms::create,
        rooms::list,
        rooms::get_one,
        rooms::join,
        rooms::leave,
        rooms::add_participant,
        rooms::remove_participant,
        messages::history,
        messages::post,
        crate::http::healthz,
        crate::http::readyz,
        crate::http::metrics,
        crate::handshake::ws_chat_doc,
        document,
    ),
    components(schemas(
        dto::ErrorBody,
        dto::UserDto,
        dto::RoomDto,
        dto::RoomDetailDto,
        dto::MessageDto,
        dto::HistoryDto,
        dto::RegisterRequest,
        dto::LoginRequest,
        dto::AuthResponse,
        dto::RefreshRequest,
        dto::TokenPair,
        dto::LogoutRequest,
        dto::CreateRoomRequest,
        dto::PostMessageRequest,
    ))
)]
pub(crate) struct ApiDoc;

#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "This document")))]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
