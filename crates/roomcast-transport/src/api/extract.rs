//! Extractors that answer in the API's error shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use roomcast_domain::User;
use roomcast_storage::ServiceKey;
use serde::de::DeserializeOwned;

use crate::auth::token_from;
use crate::{ApiError, AppState, ErrorCode, service_keys};

/// The authenticated person (cookie `JWT` or bearer token): what every
/// endpoint but the message ones asks for. A service key here is 403
/// `insufficient_scope`, not 401: it is valid, just not for this.
#[derive(Debug)]
pub(crate) struct CurrentUser {
    pub user: User,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, app).await? {
            Caller::Person(user) => Ok(CurrentUser { user }),
            Caller::Service(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InsufficientScope,
                "Service keys may only post, edit and delete messages (scope `publish`) \
                 and read history (scope `read`).",
            )),
        }
    }
}

/// Whoever calls an endpoint that people and service keys may both use:
/// a person (JWT, cookie or bearer) or a live service key
/// (`Authorization: Bearer rk_...`; unknown or revoked: 401).
#[derive(Debug)]
pub(crate) enum Caller {
    Person(User),
    Service(ServiceKey),
}

impl Caller {
    /// Who acts: the person, or the key's bot user.
    pub(crate) fn user(&self) -> &User {
        match self {
            Caller::Person(user) => user,
            Caller::Service(key) => &key.bot,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = token_from(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("Authentication required."))?;
        if service_keys::is_service_key(&token) {
            let key = service_keys::live_key(app, &token).await?;
            crate::access::identified(key.bot.id);
            return Ok(Caller::Service(key));
        }
        let (id, claims) = app
            .keys()
            .verify(&token)
            .map_err(|_| ApiError::unauthorized("Invalid or expired token."))?;
        if claims
            .session()
            .is_some_and(|s| app.sessions().is_revoked(s))
        {
            return Err(ApiError::unauthorized(
                "This session has ended; log in again.",
            ));
        }
        let user = app
            .storage()
            .user_by_id(id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("Invalid or expired token."))?;
        crate::access::identified(user.id);
        Ok(Caller::Person(user))
    }
}

/// The client's address (the TCP peer; behind a reverse proxy, the
/// proxy's), when the server recorded it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddress(peer))
    }
}

/// A JSON body; malformed, ill-typed or oversized bodies get 400/413/415
/// in the API's error shape instead of axum's plain text.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "The request body is too large.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "Expected Content-Type: application/json.",
        ),
        _ => {
            // serde's message names the field and the expected type; it
            // echoes no more of the input than the client sent.
            let detail = rejection.body_text();
            let detail = detail.split(" at line ").next().unwrap_or_default();
            ApiError::bad_request(format!("Invalid JSON body: {detail}."))
        }
    }
}
