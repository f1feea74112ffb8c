//! Plain HTTP endpoints: liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

/// The process is up.
pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Storage and the channel layer answer: this node can serve.
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
        let body = json!({ "error": problems.join(", "), "code": "unavailable" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
