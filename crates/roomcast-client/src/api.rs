//! The few HTTP calls a service needs before and while it chats: log in
//! with a password, renew the access token with the refresh token.
//!
//! Over the same TLS settings as the socket (`tls.rs`): `https://` trusts
//! the public roots plus the configured extra ones.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{ClientError, TokenProvider, tls};

/// The server's HTTP API at one base URL (`https://chat.example.com`).
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// What logging in returns: the user's tokens.
#[derive(Clone, Deserialize)]
pub struct Tokens {
    /// The access token: `Auth::Bearer` or the `JWT` cookie.
    pub token: String,
    /// The refresh token, for [`Api::refresh`] (rotated on each use).
    pub refresh: String,
}

impl std::fmt::Debug for Tokens {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(***)")
    }
}

/// Logs in to the server at `base_url` with a username (or email) and
/// password: `Api::new(base_url)?.login(user, password)`.
pub async fn login(base_url: &str, user: &str, password: &str) -> Result<Tokens, ClientError> {
    Api::new(base_url)?.login(user, password).await
}

impl Api {
    /// The API at `base_url`, trusting the public roots.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_root_certificates(base_url, &[])
    }

    /// The API at `base_url`, trusting `extra` roots too (a private CA).
    pub fn with_root_certificates(
        base_url: &str,
        extra: &[CertificateDer<'static>],
    ) -> Result<Self, ClientError> {
        let tls = tls::client_config(extra)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// `POST /api/auth/login`.
    pub async fn login(&self, user: &str, password: &str) -> Result<Tokens, ClientError> {
        let body = serde_json::json!({ "login": user, "password": password });
        self.post("/api/auth/login", &body).await
    }

    /// `POST /api/auth/refresh`: a new access token and a new refresh
    /// token (the old one is refused from now on).
    pub async fn refresh(&self, refresh: &str) -> Result<Tokens, ClientError> {
        let body = serde_json::json!({ "refresh": refresh });
        self.post("/api/auth/refresh", &body).await
    }

    /// A [`TokenProvider`] for a user who logs in with a password: each
    /// call renews with the refresh token (from `after`, the tokens of a
    /// login just made, then from each renewal), and logs in again when
    /// there is none yet or it is refused (expired, revoked).
    pub fn password_provider(
        &self,
        user: &str,
        password: &str,
        after: Option<&Tokens>,
    ) -> TokenProvider {
        let api = self.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        let refresh = Arc::new(Mutex::new(after.map(|t| t.refresh.clone())));
        TokenProvider::new(move || {
            let (api, user, password, refresh) =
                (api.clone(), user.clone(), password.clone(), refresh.clone());
            async move {
                // One renewal at a time: each refresh token works once.
                let mut refresh = refresh.lock().await;
                let renewed = match refresh.as_deref() {
                    Some(token) => match api.refresh(token).await {
                        Err(ClientError::Refused { status: 401, .. }) => None,
                        other => Some(other?),
                    },
                    None => None,
                };
                let tokens = match renewed {
                    Some(tokens) => tokens,
                    None => api.login(&user, &password).await?,
                };
                *refresh = Some(tokens.refresh);
                Ok::<_, ClientError>(tokens.token)
            }
        })
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Tokens, ClientError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let message = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(response.json().await?)
    }
}
