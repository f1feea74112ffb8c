//! Access logs at `info`: one line per HTTP request (through tower-http's
//! `TraceLayer`) and one per socket opened and closed. They carry the
//! method, the matched route (a template: no names or ids from the path),
//! the status or close code, the duration, the request id and the user
//! id when known; never a token, a password or a body.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use roomcast_domain::{Room, User, UserId};
use tracing::Span;

/// The request's span, which the access line and everything logged while
/// serving it (a socket's whole life included) carry.
pub(crate) fn span<B>(request: &Request<B>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        user_id = tracing::field::Empty,
    )
}

/// The access line, when the response head is ready.
pub(crate) fn line<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    tracing::info!(
        status = response.status().as_u16(),
        duration_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
}

/// Puts the authenticated user's id on the current request's span.
pub(crate) fn identified(user: UserId) {
    Span::current().record("user_id", tracing::field::display(user));
}

pub(crate) fn socket_opened(user: &User, room: &Room) {
    tracing::info!(user_id = %user.id, room = %format_args!("{}/{}", room.host, room.slug), "socket opened");
}

/// `code` is the close frame's (`None`: the connection ended without one).
pub(crate) fn socket_closed(
    user: &User,
    room: &Room,
    code: Option<u16>,
    reason: &str,
    lasted: Duration,
) {
    crate::metrics::socket_closed(code);
    tracing::info!(
        user_id = %user.id,
        room = %format_args!("{}/{}", room.host, room.slug),
        code,
        reason,
        duration_ms = lasted.as_secs_f64() * 1000.0,
        "socket closed"
    );
}
