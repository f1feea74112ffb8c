//! Shutdown, restart, and the fixture command driving a real connection.

use serde_json::json;

use crate::harness::{Options, Ws, post, spawn_app, spawn_app_in};

#[tokio::test]
async fn graceful_shutdown_closes_every_socket_with_1001() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(2, 2).await;
    let mut sockets = Vec::new();
    for room in &rooms {
        for member in 0..2 {
            sockets.push(app.connect(room, member).await);
        }
    }
    let stopping = tokio::spawn(async move {
        app.shutdown().await;
        app
    });
    for ws in &mut sockets {
        assert_eq!(ws.closed().await, Some(1001));
    }
    let app = stopping.await.expect("shutdown task");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
}

#[tokio::test]
async fn drop_mode_ends_sockets_without_a_close_frame_so_seed_clients_reconnect() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_app_in(
        temp.path(),
        Options {
            drop_on_shutdown: true,
            ..Default::default()
        },
    )
    .await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    let stopping = tokio::spawn(async move { app.shutdown().await });
    assert_eq!(ws.closed().await, None, "no close frame: an unclean close");
    stopping.await.expect("shutdown task");
}

#[tokio::test]
async fn messages_survive_a_server_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_app_in(temp.path(), Options::default()).await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    let first = post(&mut ws, "kept on disk").await;
    app.shutdown().await;

    let app = spawn_app_in(temp.path(), Options::default()).await;
    // Same data dir: same secret, so the old tokens still work.
    let rooms_again = app.fixture(1, 1).await;
    assert_eq!(
        rooms_again[0].members[0].user_id,
        rooms[0].members[0].user_id
    );
    let mut ws = app.connect_with(&rooms[0], 0, Some(0)).await;
    assert_eq!(ws.next_json().await, first);
    assert_eq!(
        ws.next_json().await,
        json!({"type": "chat_event", "action": "synced", "seq": 1})
    );
    assert_eq!(post(&mut ws, "after restart").await["seq"], 2);
}

#[tokio::test]
async fn fixture_output_drives_a_real_connection() {
    let app = spawn_app().await;
    let fixture = roomcast_app::fixture(&app.common(), 3, 4)
        .await
        .expect("fixture");
    let doc = serde_json::to_value(&fixture).expect("fixture serializes");
    assert_eq!(doc["name"], "roomcast");
    assert_eq!(doc["cookie_name"], "JWT");
    assert_eq!(doc["rooms"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["rooms"][2]["members"].as_array().map(Vec::len), Some(4));
    assert_eq!(doc["rooms"][1]["host"], "user-4");
    // Exactly as a load tool would: read the document, connect, talk.
    let room = &doc["rooms"][1];
    let url = format!(
        "{}/{}/{}",
        doc["ws_base"].as_str().expect("ws_base"),
        room["host"].as_str().expect("host"),
        room["slug"].as_str().expect("slug")
    );
    let cookie = format!(
        "{}={}",
        doc["cookie_name"].as_str().expect("cookie"),
        room["members"][3]["token"].as_str().expect("token")
    );
    let origin = doc["origin"].as_str().expect("origin");
    let mut ws = Ws::connect(&url, &[("Cookie", &cookie), ("Origin", origin)])
        .await
        .expect("fixture token works");
    let event = post(&mut ws, "hello from the fixture").await;
    assert_eq!(event["user"], room["members"][3]["username"]);
    assert_eq!(event["user_id"], room["members"][3]["user_id"]);
    // Running it again with other numbers adds rooms and keeps the old ones.
    let again = roomcast_app::fixture(&app.common(), 4, 2)
        .await
        .expect("fixture again");
    assert_eq!(again.rooms.len(), 4);
    let mut ws = Ws::connect(&url, &[("Cookie", &cookie), ("Origin", origin)])
        .await
        .expect("old room still works");
    assert_eq!(post(&mut ws, "still here").await["seq"], 2);
}
