//! The answered close (PROTOCOL.md section 5): a client's close frame comes
//! back with the same code and the server ends the connection, so browsers
//! see `wasClean` true and the seed client does not reconnect.

use std::time::Duration;

use roomcast_client::{Auth, Client, ClientConfig, Status};

use crate::harness::{PATIENCE, post, spawn_app};

#[tokio::test]
async fn a_clients_close_is_answered_with_its_code_and_the_connection_ends() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    for code in [1000, 1001, 4000] {
        let mut ws = app.connect(&rooms[0], 0).await;
        assert_eq!(ws.close_with(code).await, (Some(code), true), "code {code}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_write_sent_just_before_the_close_is_still_stored_and_broadcast() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut bob = app.connect(&rooms[0], 1).await;
    let mut alice = app.connect(&rooms[0], 0).await;
    post(&mut alice, "first").await;
    alice
        .send_json(serde_json::json!({"type": "text", "message": "last words"}))
        .await;
    let (code, clean) = alice.close_with(1000).await;
    assert_eq!((code, clean), (Some(1000), true));
    assert_eq!(bob.next_json().await["body"], "first");
    assert_eq!(bob.next_json().await["body"], "last words");
    app.shutdown().await;
}

#[tokio::test]
async fn the_rust_client_closes_cleanly() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let room = &rooms[0];
    let auth = Auth::Cookie {
        name: "JWT".into(),
        token: room.members[0].token.clone(),
    };
    let config = ClientConfig::new(
        &format!("ws://{}/ws/chat", app.addr),
        &room.host,
        &room.slug,
        auth,
    )
    .expect("valid room")
    .with_origin(app.origin());
    let (client, _events) = Client::connect(config);
    let mut status = client.status_changes();
    tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| matches!(s, Status::Connected)),
    )
    .await
    .expect("connected in time")
    .expect("client running");
    let closed = tokio::time::timeout(PATIENCE + Duration::from_secs(1), client.close())
        .await
        .expect("closed in time");
    assert!(closed, "the server answered the client's close");
    app.shutdown().await;
}
