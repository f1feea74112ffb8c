//! Access tokens: HS256 JWTs, from the `JWT` cookie or a bearer header.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomcast_domain::{User, UserId};
use serde::{Deserialize, Serialize};

/// The cookie the seed's browser client sends.
pub const COOKIE_NAME: &str = "JWT";

/// What a token says. `sub` is the user's UUID (as `docs/fixture.md`
/// requires); `username` saves a lookup for logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub username: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    pub iat: i64,
    /// The login session (refresh-token family) this token belongs to;
    /// absent for tokens minted outside a login (fixtures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// The login session, when the token names one.
    pub fn session(&self) -> Option<roomcast_domain::RefreshFamily> {
        self.sid
            .as_deref()
            .and_then(|s| roomcast_domain::RefreshFamily::parse(s).ok())
    }
}

/// Why a token was refused. Clients only ever see "unauthorized".
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token refused: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token subject is not a user id")]
    BadSubject,
}

/// The server's signing keys, with the algorithm pinned to HS256.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)") // never print the secret
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.validate_exp = true;
        // We verify our own tokens: no clock skew to allow for, and an
        // expired token must be refused at once.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs an access token for `user`, valid for `ttl`.
    pub fn sign(&self, user: &User, ttl: time::Duration) -> Result<String, AuthError> {
        self.sign_session(user, ttl, None)
    }

    /// Signs an access token that names its login session.
    pub fn sign_session(
        &self,
        user: &User,
        ttl: time::Duration,
        session: Option<roomcast_domain::RefreshFamily>,
    ) -> Result<String, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            username: user.username.to_string(),
            exp: now + ttl.whole_seconds(),
            iat: now,
            sid: session.map(|s| s.to_string()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Invalid)
    }

    /// Checks signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<(UserId, Claims), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(AuthError::Invalid)?;
        let id = UserId::parse(&data.claims.sub).map_err(|_| AuthError::BadSubject)?;
        Ok((id, data.claims))
    }
}

/// The request's token: the `JWT` cookie first (the seed's browser), then
/// `Authorization: Bearer` (services).
pub fn token_from(headers: &HeaderMap) -> Option<String> {
    let from_cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty());
    from_cookie.or_else(|| {
        let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use roomcast_domain::Username;

    fn user() -> User {
        User {
            id: UserId::new(),
            username: Username::parse("alice").expect("valid"),
            name: String::new(),
            avatar: None,
        }
    }

    #[test]
    fn tokens_verify_with_their_own_secret_only() {
        let keys = JwtKeys::new(b"secret-one");
        let alice = user();
        let token = keys.sign(&alice, time::Duration::hours(1)).expect("sign");
        let (id, claims) = keys.verify(&token).expect("verify");
        assert_eq!(id, alice.id);
        assert_eq!(claims.username, "alice");
        assert!(JwtKeys::new(b"secret-two").verify(&token).is_err());
    }

    #[test]
    fn expired_and_unsigned_tokens_are_refused() {
        let keys = JwtKeys::new(b"s");
        let expired = keys
            .sign(&user(), time::Duration::seconds(-5))
            .expect("sign");
        assert!(keys.verify(&expired).is_err());
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            "eyJzdWIiOiIwMTkwYTZhMC0wMDAwLTcwMDAtODAwMC0wMDAwMDAwMDAwYWEiLCJ1c2VybmFtZSI6ImEiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MH0"
        );
        assert!(keys.verify(&none).is_err());
        assert!(keys.verify("garbage").is_err());
    }

    #[test]
    fn the_cookie_wins_over_the_bearer_header() {
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Headers, Option<&str>); 6] = [
            (&[("cookie", "a=1; JWT=tok; b=2")], Some("tok")),
            (&[("cookie", "JWT=\"quoted\"")], Some("quoted")),
            (&[("authorization", "Bearer bear")], Some("bear")),
            (
                &[("authorization", "bearer bear"), ("cookie", "JWT=cook")],
                Some("cook"),
            ),
            (&[("authorization", "Basic abc")], None),
            (&[("cookie", "XJWT=no; JWT=")], None),
        ];
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(*k, HeaderValue::from_str(v).expect("valid header"));
            }
            assert_eq!(token_from(&map).as_deref(), want, "{headers:?}");
        }
    }
}
