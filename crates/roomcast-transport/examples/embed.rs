//! Roomcast inside an existing axum app.
//!
//! The app has routes and state of its own (a tiny release tracker).
//! Roomcast's router is merged under `/chat`, so its HTTP API is at
//! `/chat/api/...` and its sockets at `/chat/ws/chat/{host}/{slug}`; and
//! the app's own handler `POST /releases` announces each release in a room
//! through Roomcast's [`Publisher`]: stored with the room's next `seq`,
//! idempotent by `clientId`, broadcast to every socket of the room, exactly
//! as if a person had posted it.
//!
//! Run it, then try it:
//!
//! ```text
//! cargo run -p roomcast-transport --example embed
//! curl -s -H 'Content-Type: application/json' -d '{"version":"1.2.0"}' http://127.0.0.1:3000/releases
//! curl -s http://127.0.0.1:3000/chat/api/openapi.json | head -c 200
//! ```
//!
//! (`EMBED_BIND` picks another address; an in-memory SQLite database and
//! the in-memory channel layer keep it self-contained: point
//! `roomcast_storage::connect` at PostgreSQL and give the hub a Redis layer
//! for a fleet.) Roomcast's embedded web client expects to be served at
//! the root; under a prefix, use its API and sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use roomcast_domain::{ClientId, MessageBody, RoomId, RoomSlug, User, Username, Visibility};
use roomcast_storage::{NewRoom, NewUser};
use roomcast_transport::{AppState, JwtKeys, Publisher, TransportConfig, hub_builder};
use serde_json::{Value, json};

/// The app's own state: what it had before it embedded Roomcast, plus
/// the publisher and where to announce.
#[derive(Clone)]
struct Tracker {
    releases: Arc<tokio::sync::Mutex<Vec<String>>>,
    publisher: Publisher,
    announcer: User,
    room: RoomId,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Roomcast's parts: storage, the node's hub, keys and settings.
    let storage = roomcast_storage::connect("sqlite::memory:").await?;
    let hub = hub_builder(&storage, Default::default()).standalone();
    let chat = AppState::new(
        storage.clone(),
        hub,
        JwtKeys::new(b"use a long random secret, kept out of the code"),
        TransportConfig::default(),
    );

    // Who announces, and where: a bot account nobody can log in to (no
    // password) hosting a public room anyone may join.
    let announcer = storage
        .create_user(NewUser {
            username: Username::parse("release-bot")?,
            name: "Release bot".into(),
            email: None,
            password_hash: None,
        })
        .await?;
    let room = storage
        .create_room(NewRoom {
            host: announcer.id,
            slug: RoomSlug::parse("releases")?,
            name: "Releases".into(),
            description: "Every release, as it ships.".into(),
            visibility: Visibility::Public,
        })
        .await?;

    let tracker = Tracker {
        releases: Default::default(),
        publisher: chat.publisher(),
        announcer,
        room: room.id,
    };
    let app = Router::new()
        .route(
            "/",
            get(|| async { "The release tracker. Chat is under /chat." }),
        )
        .route("/releases", post(release).get(releases))
        .with_state(tracker)
        .nest("/chat", roomcast_transport::router(chat));

    let bind = std::env::var("EMBED_BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    println!(
        "Chat room: ws://{}/chat/ws/chat/release-bot/releases",
        listener.local_addr()?
    );
    // Roomcast's handlers read the client's address (log-in throttling).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// The app's own handler: records a release, then announces it in the
/// room. The version doubles as the `clientId`, so a retried request
/// announces once.
async fn release(
    State(tracker): State<Tracker>,
    Json(req): Json<Value>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, String)> {
    let bad = |e: &dyn std::fmt::Display| (StatusCode::BAD_REQUEST, e.to_string());
    let version = req["version"]
        .as_str()
        .ok_or_else(|| bad(&"expected {\"version\": \"...\"}"))?;
    let body = MessageBody::parse(&format!("Version {version} is out.")).map_err(|e| bad(&e))?;
    let client_id = ClientId::parse(format!("release-{version}")).map_err(|e| bad(&e))?;
    let posted = tracker
        .publisher
        .post(tracker.room, &tracker.announcer, body, Some(client_id))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if !posted.duplicate {
        tracker.releases.lock().await.push(version.to_owned());
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"version": version, "seq": posted.event.seq.get()})),
    ))
}

async fn releases(State(tracker): State<Tracker>) -> Json<Vec<String>> {
    Json(tracker.releases.lock().await.clone())
}
