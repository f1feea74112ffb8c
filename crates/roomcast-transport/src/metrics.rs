//! The server's Prometheus metrics, named in one place.
//!
//! Recording goes through the `metrics` facade: with no recorder installed
//! (an embedder that does not want metrics) every call is a no-op. The
//! binary installs a Prometheus recorder and gives a render function to
//! [`crate::AppState::set_metrics`] so `/metrics` can render it.

use std::time::Duration;

pub(crate) fn connection_opened() {
    metrics::gauge!("roomcast_connections").increment(1.0);
    metrics::counter!("roomcast_connections_opened_total").increment(1);
}

pub(crate) fn connection_closed() {
    metrics::gauge!("roomcast_connections").decrement(1.0);
}

pub(crate) fn handshake_refused(reason: &'static str) {
    metrics::counter!("roomcast_handshake_refusals_total", "reason" => reason).increment(1);
}

pub(crate) fn event_stored(action: &'static str) {
    metrics::counter!("roomcast_events_stored_total", "action" => action).increment(1);
}

/// Frames of stored events written to sockets.
pub(crate) fn events_delivered(n: u64) {
    metrics::counter!("roomcast_events_broadcast_total").increment(n);
}

pub(crate) fn send_error(code: &'static str) {
    metrics::counter!("roomcast_send_errors_total", "code" => code).increment(1);
}

pub(crate) fn slow_consumer_closed() {
    metrics::counter!("roomcast_slow_consumers_closed_total").increment(1);
}

pub(crate) fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    metrics::histogram!(
        "roomcast_http_request_duration_seconds",
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .record(took.as_secs_f64());
}

/// A password check turned away because the hashing slots and their queue
/// were full.
pub(crate) fn password_check_refused() {
    metrics::counter!("roomcast_password_checks_refused_total").increment(1);
}

/// A request or frame refused by a limit (`what`: message, typing, login,
/// signup).
pub(crate) fn rate_limited(what: &'static str) {
    metrics::counter!("roomcast_rate_limited_total", "what" => what).increment(1);
}
