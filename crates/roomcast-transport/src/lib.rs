//! Roomcast over the network: the WebSocket consumer of
//! `/ws/chat/{host}/{slug}` and the HTTP endpoints, on axum.
//!
//! It also serves the embedded web client at `/` (`web.rs`).
//!
//! [`router`] builds the axum app from an [`AppState`] (storage, hub, keys,
//! configuration); [`serve`] runs it on a listener until a shutdown future
//! resolves, then closes every socket (1001, or a bare TCP close in
//! [`ShutdownMode::Drop`]) and returns. Nothing here reads the environment
//! or installs a tracing subscriber: the binary does.
//!
//! Invariants: an event is broadcast only after storage acknowledged it;
//! a refused handshake is a plain HTTP status with a JSON body, never an
//! accepted-then-closed socket; internal error text never reaches a client.

mod access;
mod api;
mod auth;
mod backfill;
mod chat;
mod config;
mod consumer;
mod error;
mod handshake;
mod http;
mod limits;
pub mod metrics;
mod password;
mod reads;
mod replies;
mod routes;
mod server;
mod service_keys;
mod sessions;
mod state;
mod throttle;
mod user_feed;
mod web;

pub use auth::{AuthError, Claims, JwtKeys};
pub use backfill::{encode_event, hub_builder};
pub use chat::Publisher;
pub use config::{AllowedOrigins, RateLimitConfig, ShutdownMode, TransportConfig};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use server::{router, serve, serve_metrics};
pub use service_keys::{GeneratedKey, SERVICE_KEY_PREFIX};

/// The OpenAPI document of the HTTP API, as `/api/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::openapi::spec()
}
pub use state::AppState;
