//! Joins a room, posts a message, prints what arrives for a few seconds.
//!
//! ```text
//! roomcast serve &
//! roomcast fixture --rooms 1 --members 2 > fixture.json
//! cargo run -p roomcast-client --example chat -- fixture.json "hello from Rust"
//! ```
//!
//! It connects as the room's first member, with the fixture's cookie and
//! origin, exactly as a load tool or a service would.

mod shared;

use std::time::Duration;

use anyhow::Context;
use roomcast_client::{Auth, ClientConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: chat FIXTURE.json [MESSAGE]")?;
    let text = args
        .next()
        .unwrap_or_else(|| "hello from roomcast-client".into());
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| path.clone())?)?;
    let field = |v: &serde_json::Value, k: &str| -> anyhow::Result<String> {
        Ok(v[k]
            .as_str()
            .with_context(|| format!("fixture lacks {k}"))?
            .to_owned())
    };
    let room = &fixture["rooms"][0];
    let member = &room["members"][0];
    let config = ClientConfig::new(
        &field(&fixture, "ws_base")?,
        &field(room, "host")?,
        &field(room, "slug")?,
        Auth::Cookie {
            name: field(&fixture, "cookie_name")?,
            token: field(member, "token")?,
        },
    )?
    .with_origin(field(&fixture, "origin")?);

    shared::post_and_listen(config, &text, Duration::from_secs(3)).await
}
