//! The HTTP API of PROTOCOL.md section 6, under `/api`.

mod accounts;
mod docs;
pub(crate) mod dto;
mod extract;
mod messages;
pub(crate) mod openapi;
mod presence;
mod reads;
mod rooms;

use axum::routing::{get, patch, post, put};

use crate::routes::Routes;

pub(crate) fn routes() -> Routes {
    Routes::new()
        .route("/api/auth/register", post(accounts::register))
        .route("/api/auth/login", post(accounts::login))
        .route("/api/auth/refresh", post(accounts::refresh))
        .route("/api/auth/logout", post(accounts::logout))
        .route("/api/me", get(accounts::me))
        .route("/api/rooms", post(rooms::create).get(rooms::list))
        .route("/api/rooms/{host}/{slug}", get(rooms::get_one))
        .route("/api/rooms/{host}/{slug}/join", post(rooms::join))
        .route("/api/rooms/{host}/{slug}/leave", post(rooms::leave))
        .route(
            "/api/rooms/{host}/{slug}/participants/{username}",
            put(rooms::add_participant).delete(rooms::remove_participant),
        )
        .route(
            "/api/rooms/{host}/{slug}/messages",
            get(messages::history).post(messages::post),
        )
        .route(
            "/api/rooms/{host}/{slug}/messages/{id}",
            patch(messages::edit).delete(messages::delete),
        )
        .route("/api/rooms/{host}/{slug}/read", put(reads::mark_read))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/docs", get(docs::page))
        .route("/api/docs/{file}", get(docs::asset))
        .route("/api/rooms/{host}/{slug}/presence", get(presence::presence))
}
