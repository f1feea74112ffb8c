//! Logs in with a password, joins a room, posts a message and prints what
//! arrives; stays connected across access-token expiry by renewing the
//! token (refresh token first, the password again if that is refused).
//!
//! ```text
//! cargo run -p roomcast-client --example login -- \
//!     https://chat.example.com alice 'correct horse battery' alice/book-club "hello"
//! ```
//!
//! The password comes from the command line here for brevity; a service
//! reads it from its secret store. `wss://` and `https://` trust the public
//! CAs compiled into the binary; set `ROOMCAST_CA_FILE` to a PEM file to
//! trust a private CA too.

mod shared;

use std::time::Duration;

use anyhow::Context;
use roomcast_client::{Api, Auth, ClientConfig, certificates_from_pem};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let usage = "usage: login BASE_URL USER PASSWORD HOST/SLUG [MESSAGE]";
    let mut args = std::env::args().skip(1);
    let base = args.next().context(usage)?;
    let user = args.next().context(usage)?;
    let password = args.next().context(usage)?;
    let room = args.next().context(usage)?;
    let text = args
        .next()
        .unwrap_or_else(|| "hello from roomcast-client".into());
    let (host, slug) = room.split_once('/').context("the room is HOST/SLUG")?;

    let roots = match std::env::var_os("ROOMCAST_CA_FILE") {
        Some(path) => certificates_from_pem(&std::fs::read(&path).context("ROOMCAST_CA_FILE")?)?,
        None => Vec::new(),
    };
    let api = Api::with_root_certificates(&base, &roots)?;
    // `roomcast_client::login(&base, ..)` does the same with the public
    // roots only.
    let tokens = api.login(&user, &password).await?;
    println!("logged in as {user}");

    // http(s)://host -> ws(s)://host/ws/chat
    let ws_base = format!(
        "{}/ws/chat",
        base.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let config = ClientConfig::new(&ws_base, host, slug, Auth::Bearer(tokens.token.clone()))?
        .with_token_provider(api.password_provider(&user, &password, Some(&tokens)))
        .with_root_certificates(roots);
    shared::post_and_listen(config, &text, Duration::from_secs(5)).await
}
