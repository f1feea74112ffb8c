//! Plain HTTP endpoints: liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::{AppState, ErrorBody};

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz", security(()),
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))))]
pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: storage and the channel layer answer, so this node can serve.
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz", security(()),
    responses((status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, body = ErrorBody, description = "Storage or channel layer down")))]
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    let storage = app.storage().health().await;
    let layer = app.hub().layer().health().await;
    let mut problems = Vec::new();
    if let Err(e) = &storage {
        tracing::warn!(error = %e, "readiness: storage down");
        problems.push("storage unavailable");
    }
    if let Err(e) = &layer {
        tracing::warn!(error = %e, "readiness: channel layer down");
        problems.push("channel layer unavailable");
    }
    if problems.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        crate::ApiError::unavailable(&problems.join(", ")).into_response()
    }
}

/// Metrics in the Prometheus text format (404 when they are served on a
/// listener of their own, `--metrics-bind`).
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", security(()),
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 404, description = "Served on another listener", body = crate::ErrorBody)))]
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    if !app.config().public_metrics {
        return not_found().await;
    }
    private_metrics(State(app)).await
}

/// `/metrics` on the metrics listener ([`crate::serve_metrics`]).
pub(crate) async fn private_metrics(State(app): State<AppState>) -> Response {
    let layer_up = app.hub().layer().health().await.is_ok();
    crate::metrics::scrape(app.hub().local_rooms(), layer_up);
    let text = app.render_metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// Records every HTTP request's latency by route template.
pub(crate) async fn track(
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Unknown paths, in the API's error shape.
pub(crate) async fn not_found() -> Response {
    crate::ApiError::not_found("No such endpoint.").into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    crate::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        crate::ErrorCode::MethodNotAllowed,
        "Method not allowed.",
    )
    .into_response()
}

/// State-changing requests from a browser page of another origin are
/// refused (403), as WebSocket handshakes are: the `JWT` cookie is sent
/// with a sibling site's form post. Requests without `Origin` (not from a
/// browser, or a same-origin GET) pass, as do the CORS origins the
/// operator allowed to call the API.
pub(crate) async fn check_origin(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let changes_state = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let origin = request
        .headers()
        .get(axum::http::header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let cors = |o: &str| {
        let o = o.trim_end_matches('/');
        app.config()
            .cors_origins
            .iter()
            .any(|c| c.trim_end_matches('/').eq_ignore_ascii_case(o))
    };
    if changes_state && !app.config().allowed_origins.allows(origin) && !origin.is_some_and(cors) {
        return crate::ApiError::forbidden("Origin not allowed.").into_response();
    }
    next.run(request).await
}
