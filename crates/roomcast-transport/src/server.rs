//! The axum app and its lifecycle.

use std::future::Future;
use std::io;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use axum::extract::DefaultBodyLimit;

use crate::{AppState, api, handshake, http, web};

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().max_body_bytes;
    Router::new()
        .route("/ws/chat/{host}/{slug}", get(handshake::ws_chat))
        // Django routes usually end in a slash; accept the seed's URL either way.
        .route("/ws/chat/{host}/{slug}/", get(handshake::ws_chat))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .merge(api::routes())
        // The web app for every other path (unknown /api and /ws paths
        // stay JSON 404s).
        .fallback(web::fallback)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(http::track))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves; then stops
/// accepting, closes every socket as the configured shutdown mode says, and
/// waits (up to the grace period) for them to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let token = state.shutdown_token().clone();
    let app = router(state.clone());
    // Small chat frames must leave at once, not wait for Nagle.
    let send_buffer = state.config().tcp_send_buffer_bytes;
    let listener = listener.tap_io(move |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if let Some(bytes) = send_buffer
            && let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(bytes)
        {
            tracing::debug!(error = %e, "cannot set SO_SNDBUF");
        }
    });
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: closing sockets");
        token.cancel();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    // Upgraded sockets are not axum's connections any more: wait for ours.
    state.shutdown_token().cancel();
    let sockets = state.sockets();
    sockets.close();
    if tokio::time::timeout(state.config().shutdown_grace, sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = sockets.len(),
            "sockets still open after the grace period"
        );
    }
    state.hub().close().await;
    Ok(())
}
