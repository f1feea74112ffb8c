//! Where a long-running client gets its access tokens.
//!
//! Access tokens are short-lived (the server's `ROOMCAST_ACCESS_TOKEN_TTL`,
//! ten minutes by default) and the server closes a socket whose token
//! expires (1008 "Token expired."). A client given a [`TokenProvider`]
//! asks it for a new token a little before the current one expires, then
//! reconnects with it, resuming with `since` so nothing is lost; and if the
//! server closed the socket first, it does the same at once instead of
//! stopping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;

use crate::{BoxError, ClientError};

type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

/// An async callback that returns a fresh access token (typically by
/// calling `/api/auth/refresh`, or logging in again: see
/// [`Api::password_provider`](crate::Api::password_provider)).
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenProvider {
    pub fn new<F, Fut, E>(provide: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self(Arc::new(move || {
            let token = provide();
            Box::pin(async move { token.await.map_err(Into::into) })
        }))
    }

    /// Asks for a token now (the client does when it needs one; a
    /// service may too, for its HTTP calls).
    pub async fn token(&self) -> Result<String, ClientError> {
        (self.0)().await.map_err(ClientError::Token)
    }
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// When a token expires: the `exp` claim of a JWT, read without checking
/// its signature (the server checks it; the client only needs to know
/// when to renew). `None` for a token that is not a JWT (a service key)
/// or carries no `exp`: such a token is renewed only when refused.
pub(crate) fn expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// How long from `now` until a token expiring at `expires` should be
/// renewed: `before` ahead of its expiry, but never more than a quarter of
/// the time it has left, so a short-lived token is still used for most of
/// its life. Zero when it is due (or past).
pub(crate) fn renew_in(now: SystemTime, expires: SystemTime, before: Duration) -> Duration {
    let left = expires.duration_since(now).unwrap_or(Duration::ZERO);
    left - before.min(left / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims))
    }

    #[test]
    fn a_jwts_expiry_is_its_exp_claim_and_other_tokens_have_none() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(expiry(&jwt(r#"{"sub":"u","exp":1700000000}"#)), Some(at));
        assert_eq!(expiry(&jwt(r#"{"sub":"u"}"#)), None);
        assert_eq!(expiry("rk_0123456789abcdef"), None);
        assert_eq!(expiry("a.!!!.c"), None);
    }

    #[test]
    fn renewal_comes_ahead_of_expiry_but_a_short_token_lives_most_of_its_life() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let secs = Duration::from_secs;
        // Ten minutes left, renewed 30 s ahead.
        assert_eq!(renew_in(now, now + secs(600), secs(30)), secs(570));
        // Two seconds left: a quarter of it ahead.
        assert_eq!(
            renew_in(now, now + secs(2), secs(30)),
            Duration::from_millis(1500)
        );
        // Expired: due now.
        assert_eq!(renew_in(now, now - secs(5), secs(30)), Duration::ZERO);
    }
}
