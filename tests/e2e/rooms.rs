//! PROTOCOL.md sections 2, 3, 6 and 7 for a user's rooms: slugs derived
//! from names, read positions and receipts, unread counts in the room list,
//! and the user socket.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::spawn_app;
use crate::http_api::Api;

#[tokio::test]
async fn a_room_name_with_accents_gets_a_transliterated_slug() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;

    let (status, room) = api
        .post(
            "/api/rooms",
            Some(&alice.token),
            json!({"name": "Café Crème"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["slug"], "cafe-creme");
    assert_eq!(room["name"], "Café Crème");
    // A slug given explicitly is taken as is, and the derived one collides.
    let (status, _) = api
        .post(
            "/api/rooms",
            Some(&alice.token),
            json!({"name": "Cafe creme"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, room) = api.get("/api/rooms/alice/cafe-creme", &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{room}");
}
