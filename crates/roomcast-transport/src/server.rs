//! The axum app and its lifecycle.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::StatusCode;
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::access;
use crate::routes::Routes;
use crate::{AppState, api, handshake, http, sessions, user_feed, web};

/// Every route of the server, with its path listed (see `routes.rs`).
pub(crate) fn routes() -> Routes {
    Routes::new()
        .route("/ws/chat/{host}/{slug}", get(handshake::ws_chat))
        // Django routes usually end in a slash; accept the seed's URL either way.
        .route("/ws/chat/{host}/{slug}/", get(handshake::ws_chat))
        .route("/ws/user", get(user_feed::ws_user))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .merge(api::routes())
}

/// The axum app: every route, the fallbacks and the layers.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().max_body_bytes;
    let request_timeout = state.config().request_timeout;
    routes()
        .into_router()
        // The web app for every other path (unknown /api and /ws paths
        // stay JSON 404s).
        .fallback(web::fallback)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::check_origin,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn(http::track))
        .layer(cors(state.config()))
        .layer(
            // Outermost first: every request gets an id (the client's
            // `x-request-id`, or a new UUID), its span and access line
            // carry it, and the response sends it back.
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(access::span)
                        .on_request(())
                        .on_response(access::line)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// Cross-origin requests from the configured origins only, with
/// credentials (the `JWT` cookie); none configured: no CORS headers, so
/// browsers keep the same-origin rule.
fn cors(
    config: &crate::TransportConfig,
) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    tower::util::Either::Left(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                CONTENT_TYPE,
                AUTHORIZATION,
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Serves `/metrics` alone on `listener` (an address only Prometheus
/// reaches) until the server shuts down; the public listener then stops
/// serving them when [`crate::TransportConfig::public_metrics`] is false.
pub async fn serve_metrics(listener: TcpListener, state: AppState) -> io::Result<()> {
    let stop = state.shutdown_token().clone();
    let app = Router::new()
        .route("/metrics", get(http::private_metrics))
        .fallback(http::not_found)
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Serves `state` on `listener` until `shutdown` resolves; then stops
/// accepting, closes every socket as the configured shutdown mode says, and
/// waits (up to the grace period) for them to finish.
///
/// Why hyper's connection builder rather than `axum::serve`: it sets no
/// header-read timeout, so a client that connects and sends nothing (or a
/// request head one byte at a time, or nothing more after a keep-alive
/// request) holds a descriptor forever. Here every connection has the
/// configured [`crate::TransportConfig::header_read_timeout`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let token = state.shutdown_token().clone();
    let app = router(state.clone());
    let config = state.config().clone();
    let connections = TaskTracker::new();
    // Logged-out sessions are known before the first request is answered.
    let since = sessions::load(&state).await;
    connections.spawn(sessions::follow(state.clone(), since));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset
                    // before accept: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tune(&tcp, config.tcp_send_buffer_bytes);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(Body::new))
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let token = token.clone();
        connections.spawn(async move {
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                () = token.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    tracing::info!("shutting down: closing sockets");
    token.cancel();
    connections.close();
    // Upgraded sockets are not HTTP connections any more: wait for ours.
    let sockets = state.sockets();
    sockets.close();
    let grace = state.config().shutdown_grace;
    let both = async {
        connections.wait().await;
        sockets.wait().await;
    };
    if tokio::time::timeout(grace, both).await.is_err() {
        tracing::warn!(
            open = sockets.len(),
            "sockets still open after the grace period"
        );
    }
    state.hub().close().await;
    Ok(())
}

/// The largest request head read (hyper's default is far larger).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Small chat frames must leave at once, not wait for Nagle; a small send
/// buffer (when configured) makes a stalled peer a slow consumer sooner.
fn tune(tcp: &TcpStream, send_buffer: Option<usize>) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Some(bytes) = send_buffer
        && let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes)
    {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn test_state() -> AppState {
        let storage = roomcast_storage::connect("sqlite::memory:")
            .await
            .expect("in-memory storage");
        let hub =
            crate::hub_builder(&storage, roomcast_broadcast::HubConfig::default()).standalone();
        AppState::new(
            storage,
            hub,
            crate::JwtKeys::new(b"route-coverage-test-secret"),
            crate::TransportConfig::default(),
        )
    }

    /// `{host}` becomes `host`: a concrete path the route matches.
    fn concrete(path: &str) -> String {
        path.replace(['{', '}'], "")
    }

    /// The document's operations as `METHOD /path` (a trailing slash, an
    /// alias the router accepts for seed URLs, is the same operation).
    fn documented() -> BTreeSet<String> {
        let doc = serde_json::to_value(crate::api::openapi::spec()).expect("serializes");
        let mut all = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                all.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        all
    }

    /// Each method a path answers with something other than 405 is served
    /// there; axum cannot list a router's methods, so ask it.
    #[tokio::test]
    async fn every_route_of_the_router_is_documented() {
        let state = test_state().await;
        let app = router(state);
        let documented = documented();
        let mut served = BTreeSet::new();
        let mut missing = Vec::new();
        for path in routes().paths() {
            let path = path.trim_end_matches('/');
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ] {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(concrete(path))
                    .body(Body::empty())
                    .expect("request");
                let response = app.clone().oneshot(request).await.expect("infallible");
                if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                    continue;
                }
                let operation = format!("{method} {path}");
                if !documented.contains(&operation) {
                    missing.push(operation.clone());
                }
                served.insert(operation);
            }
        }
        assert!(
            missing.is_empty(),
            "routes served but missing from the OpenAPI document: {missing:?}.\n\
             For each: give the handler a doc comment and #[utoipa::path(METHOD, path = \"...\", \
             operation_id = \"...\", responses(...))] (add security(()) if it needs no login), \
             and list it in paths(...) in crates/roomcast-transport/src/api/openapi.rs."
        );
        let stale: Vec<&String> = documented.difference(&served).collect();
        assert!(
            stale.is_empty(),
            "operations in the OpenAPI document that the router does not serve: {stale:?}"
        );
    }
}
