//! HTTP errors: a status and `{"error": "...", "code": "..."}`.
//!
//! [`ErrorBody`] is the one shape of every 4xx and 5xx body, and
//! [`ErrorCode`] the one list of its machine words: the handlers answer
//! with them and the OpenAPI document describes them, so the two cannot
//! drift. A new code is a contract change (docs/protocol.md).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_storage::StorageError;
use serde::Serialize;
use utoipa::ToSchema;

/// The machine word of an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (a bad parameter, JSON or field).
    BadRequest,
    /// A message body was empty after trimming.
    Empty,
    /// A message body was over the length limit.
    TooLong,
    /// No valid credentials (missing, invalid or expired token).
    Unauthorized,
    /// Authenticated, but not allowed (not a participant, wrong origin...).
    Forbidden,
    /// A service key whose scopes do not cover this endpoint (or any
    /// service key, on an endpoint only people may call).
    InsufficientScope,
    /// No such endpoint, room, user or message.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The name, slug or email is already taken.
    Conflict,
    /// The request body is over the size limit.
    TooLarge,
    /// The body is not `Content-Type: application/json`.
    UnsupportedMediaType,
    /// Too many requests; try again later.
    RateLimited,
    /// The request took too long and was abandoned.
    Timeout,
    /// Storage or the channel layer is down, or the node is at a limit:
    /// nothing was done; try again.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::Empty,
        ErrorCode::TooLong,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InsufficientScope,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
    ];

    /// The word as it appears in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Empty => "empty",
            ErrorCode::TooLong => "too_long",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": "...", "code": "..."}`: the body of every 4xx and 5xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// For people: what went wrong and what to do.
    pub error: String,
    /// For programs.
    pub code: ErrorCode,
}

/// An error answer. The message is for people, the code for programs; no
/// internal detail goes in either (it is logged instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, at least 1): when to try
    /// again after a 429 or 503.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` to the answer.
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// 429 `rate_limited`, with when to try again.
    pub fn rate_limited(message: &str, wait: std::time::Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        )
        .with_retry_after(wait)
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// The body this error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message.clone(),
            code: self.code,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ApiError::not_found("Not found."),
            StorageError::Forbidden => ApiError::forbidden("Not allowed."),
            StorageError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!("That {what} is already taken."),
            ),
            other => {
                tracing::error!(error = %other, source = ?std::error::Error::source(&other), "storage failed");
                ApiError::unavailable("Storage is unavailable; try again.")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let body = ErrorBody {
            error: self.message,
            code: self.code,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: "0" would invite an instant retry.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_word() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serializes");
            assert_eq!(json, serde_json::Value::from(code.as_str()));
        }
    }

    #[test]
    fn the_body_is_error_and_code() {
        let body = serde_json::to_value(ApiError::not_found("Room not found.").body())
            .expect("serializes");
        assert_eq!(
            body,
            serde_json::json!({"error": "Room not found.", "code": "not_found"})
        );
    }
}
