//! Sign-up, login, token refresh and logout.

use crate::service_keys::secret_hash;
use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use roomcast_domain::{RefreshFamily, Timestamp, User, Username};
use roomcast_storage::{
    NewRefreshToken, NewUser, RefreshRefusal, RotatedRefreshToken, StorageError,
};

use super::dto::{
    AuthResponse, ErrorBody, LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest,
    TokenPair, UserDto,
};
use super::extract::{ClientAddress, CurrentUser, JsonBody};
use crate::auth::{COOKIE_NAME, token_from};
use crate::{ApiError, AppState, ErrorCode};

const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

/// Sign up: creates the account and logs it in.
///
/// Sets the `JWT` cookie (HttpOnly, SameSite=Lax) and returns the access and
/// refresh tokens. An email address already registered is not attached to
/// the new account, and the answer does not say so: sign-up does not reveal
/// which addresses are registered. Throttled per client address.
#[utoipa::path(post, path = "/api/auth/register", tag = "accounts", operation_id = "register",
    security(()), request_body = RegisterRequest,
    responses((status = 201, body = AuthResponse, description = "Account created and logged in"),
        (status = 400, body = ErrorBody, description = "Invalid username, email or password"),
        (status = 409, body = ErrorBody, description = "Username already taken"),
        (status = 429, body = ErrorBody, description = "Too many sign-ups from this address; see Retry-After"),
        (status = 503, body = ErrorBody, description = "Password hashing saturated; see Retry-After")))]
pub(crate) async fn register(
    State(app): State<AppState>,
    ClientAddress(address): ClientAddress,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    if let Err(wait) = app.throttle().signup_allowed(address) {
        crate::metrics::rate_limited("signup");
        return Err(ApiError::rate_limited(
            "Too many sign-ups from this address; try again later.",
            wait,
        ));
    }
    let username = Username::parse(req.username.trim())
        .map_err(|e| ApiError::bad_request(format!("Invalid username: {e}.")))?;
    let email = req.email.trim().to_owned();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::bad_request("Invalid email address."));
    }
    check_password(&req.password)?;
    let name = req
        .name
        .unwrap_or_default()
        .trim()
        .chars()
        .take(200)
        .collect();
    let hash = app.passwords().hash(req.password).await?;
    let mut new = NewUser {
        username,
        name,
        email: Some(email),
        password_hash: Some(hash),
    };
    let user = match app.storage().create_user(new.clone()).await {
        // Someone has this address: the account is made without it, and
        // the answer is the same as for a free address.
        Err(StorageError::Conflict("email")) => {
            new.email = None;
            app.storage().create_user(new).await
        }
        other => other,
    }
    .map_err(|e| match e {
        StorageError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "That username is already taken.",
        ),
        other => other.into(),
    })?;
    tracing::info!(user = %user.username, "account created");
    issue_session(&app, &user, StatusCode::CREATED).await
}

/// Log in with a username or email and a password.
///
/// Sets the `JWT` cookie and returns the access and refresh tokens. Failed
/// attempts are throttled per account and per client address, with waits
/// that double after a few misses.
#[utoipa::path(post, path = "/api/auth/login", tag = "accounts", operation_id = "login",
    security(()), request_body = LoginRequest,
    responses((status = 200, body = AuthResponse, description = "Logged in"),
        (status = 400, body = ErrorBody, description = "Neither username nor email given"),
        (status = 401, body = ErrorBody, description = "Invalid credentials"),
        (status = 429, body = ErrorBody, description = "Too many failed log-ins for this account or from this address; see Retry-After"),
        (status = 503, body = ErrorBody, description = "Password checks saturated; see Retry-After")))]
pub(crate) async fn login(
    State(app): State<AppState>,
    ClientAddress(address): ClientAddress,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let login = req
        .login
        .or(req.username)
        .or(req.email)
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::bad_request("Give a username or an email."))?;
    // Before any hashing: a throttled guess costs nothing.
    if let Err(wait) = app.throttle().login_allowed(address, &login) {
        crate::metrics::rate_limited("login");
        return Err(ApiError::rate_limited(
            "Too many failed log-ins; try again later.",
            wait,
        ));
    }
    let found = app.storage().credentials(&login).await?;
    let stored = found.as_ref().and_then(|c| c.password_hash.clone());
    // Same answer, and about the same time, whether or not the user exists.
    let ok = app.passwords().verify(req.password, stored).await?;
    match found {
        Some(credentials) if ok => {
            app.throttle().login_succeeded(&login);
            issue_session(&app, &credentials.user, StatusCode::OK).await
        }
        _ => {
            app.throttle().login_failed(address, &login);
            Err(ApiError::unauthorized("Invalid credentials."))
        }
    }
}

/// Trade a refresh token for a new access token and a new refresh token.
///
/// The refresh token rotates: the old one is refused from now on, and
/// presenting it again revokes the whole session.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "accounts", operation_id = "refreshTokens",
    security(()), request_body = RefreshRequest,
    responses((status = 200, body = TokenPair, description = "New tokens; the cookie is set too"),
        (status = 401, body = ErrorBody, description = "Invalid, expired or reused refresh token")))]
pub(crate) async fn refresh(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    let refused = || ApiError::unauthorized("Invalid or expired refresh token.");
    let (refresh, next) = refresh_secret(&app);
    let next = RotatedRefreshToken {
        token_hash: next.hash,
        expires: next.expires,
    };
    // The rotation says whose the token was: the user and the session the
    // new access token names, read in the same transaction.
    match app
        .storage()
        .rotate_refresh_token(&secret_hash(&req.refresh), next)
        .await?
    {
        Ok(owner) => {
            let user = app
                .storage()
                .user_by_id(owner.user_id)
                .await?
                .ok_or_else(refused)?;
            let token = access_token(&app, &user, owner.family)?;
            let cookie = session_cookie(&app, &token)?;
            Ok((
                StatusCode::OK,
                [(SET_COOKIE, cookie)],
                Json(TokenPair { token, refresh }),
            )
                .into_response())
        }
        Err(RefreshRefusal::Reused) => {
            tracing::warn!("a used refresh token was presented again: its session is revoked");
            Err(refused())
        }
        Err(RefreshRefusal::Unknown) => Err(refused()),
    }
}

/// Log out: clears the cookie and revokes the session.
///
/// Revokes the session of the presented access token (even an expired one)
/// and, if given, the refresh token in the body: its refresh tokens, its
/// access tokens on every node, and its open sockets (closed with 1008).
#[utoipa::path(post, path = "/api/auth/logout", tag = "accounts", operation_id = "logout",
    security(()), request_body(content = Option<LogoutRequest>, description = "Optional: the refresh token to revoke"),
    responses((status = 204, description = "Logged out; cookie cleared; the session's tokens revoked and its sockets closed (1008)")))]
pub(crate) async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // Both the session named by the access token and the refresh token in
    // the body (if any) are revoked; an expired access token still logs out.
    if let Some(token) = token_from(&headers)
        && let Ok((_, claims)) = app.keys().verify(&token)
        && let Some(sid) = claims.session()
    {
        end_session(&app, sid).await?;
    }
    let req: LogoutRequest = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(refresh) = req.refresh
        && let Some(owner) = app
            .storage()
            .refresh_token_owner(&secret_hash(&refresh))
            .await?
    {
        end_session(&app, owner.family).await?;
    }
    let clear = cookie_header(&app, "", 0)?;
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, clear)]).into_response())
}

/// Ends a login session everywhere: its refresh tokens are spent, its
/// access tokens refused on every node (the session id is in each), and
/// its sockets closed with 1008 (here at once, on other nodes when they
/// next poll the revocation list).
async fn end_session(app: &AppState, session: RefreshFamily) -> Result<(), ApiError> {
    app.storage().revoke_refresh_family(session).await?;
    let now = Timestamp::now();
    let until = crate::sessions::access_token_end(app, now).unwrap_or(now);
    app.storage()
        .revoke_session(*session.as_uuid(), until)
        .await?;
    app.sessions().revoke(session, until);
    Ok(())
}

/// The authenticated user.
#[utoipa::path(get, path = "/api/me", tag = "accounts", operation_id = "getMe",
    responses((status = 200, body = UserDto, description = "The caller")))]
pub(crate) async fn me(caller: CurrentUser) -> Json<UserDto> {
    Json(UserDto::from(&caller.user))
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::bad_request(format!(
            "The password must be at least {MIN_PASSWORD_CHARS} characters."
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request("The password is too long."));
    }
    Ok(())
}

/// A new login session: access token (body and cookie) and refresh token.
async fn issue_session(
    app: &AppState,
    user: &User,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let family = RefreshFamily::new();
    let (refresh, secret) = refresh_secret(app);
    app.storage()
        .insert_refresh_token(NewRefreshToken {
            token_hash: secret.hash,
            user_id: user.id,
            family,
            expires: secret.expires,
        })
        .await?;
    let token = access_token(app, user, family)?;
    let cookie = session_cookie(app, &token)?;
    let body = AuthResponse {
        user: UserDto::from(user),
        token,
        refresh,
    };
    Ok((status, [(SET_COOKIE, cookie)], Json(body)).into_response())
}

fn access_token(app: &AppState, user: &User, family: RefreshFamily) -> Result<String, ApiError> {
    let ttl = time::Duration::try_from(app.config().access_token_ttl)
        .unwrap_or(time::Duration::minutes(10));
    app.keys()
        .sign_session(user, ttl, Some(family))
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign a token");
            ApiError::unavailable("Could not issue a token.")
        })
}

/// What storage keeps of a new refresh token: its hash, never the token.
struct StoredSecret {
    hash: String,
    expires: Timestamp,
}

/// A random refresh token, and its hash and expiry to store.
fn refresh_secret(app: &AppState) -> (String, StoredSecret) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let ttl = i64::try_from(app.config().refresh_token_ttl.as_micros()).unwrap_or(i64::MAX / 2);
    let expires = Timestamp::from_unix_micros(Timestamp::now().unix_micros().saturating_add(ttl))
        .unwrap_or_else(Timestamp::now);
    let stored = StoredSecret {
        hash: secret_hash(&token),
        expires,
    };
    (token, stored)
}

fn session_cookie(app: &AppState, token: &str) -> Result<HeaderValue, ApiError> {
    cookie_header(app, token, app.config().access_token_ttl.as_secs())
}

fn cookie_header(app: &AppState, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    let secure = if app.config().secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| ApiError::unavailable("Could not set the cookie."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_have_bounds() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_password(&"x".repeat(2000)).is_err());
    }
}
