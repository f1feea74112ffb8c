//! PROTOCOL.md sections 2, 3, 6 and 7 for a user's rooms: slugs derived
//! from names, read positions and receipts, unread counts in the room list,
//! and the user socket.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, Ws, post, spawn_app};
use crate::http_api::{Account, Api, ws};

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

/// The caller's entry for `host/slug` in `GET /api/rooms`.
async fn listing(api: &Api, token: &str, host: &str, slug: &str) -> Value {
    let (status, rooms) = api.get("/api/rooms", token).await;
    assert_eq!(status, StatusCode::OK, "{rooms}");
    rooms
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["host"] == host && r["slug"] == slug)
        .cloned()
        .unwrap_or_else(|| panic!("{host}/{slug} not in {rooms}"))
}

async fn put_read(api: &Api, token: &str, path: &str, seq: Value) -> (StatusCode, Value) {
    let (status, body, _) = api
        .call(
            reqwest::Method::PUT,
            path,
            Some(token),
            Some(json!({ "seq": seq })),
        )
        .await;
    (status, body)
}

/// Alice and Bob in `alice/club`, both with a socket open.
async fn club(app: &TestApp, api: &Api) -> (Account, Account, Ws, Ws) {
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    let (status, room) = api
        .post("/api/rooms", Some(&alice.token), json!({"name": "Club"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let (status, _, _) = api
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/club/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let alice_ws = ws(app, "alice", "club", &alice.token)
        .await
        .expect("alice connects");
    let bob_ws = ws(app, "alice", "club", &bob.token)
        .await
        .expect("bob connects");
    (alice, bob, alice_ws, bob_ws)
}

#[tokio::test]
async fn unread_counts_follow_posts_edits_deletes_and_reads() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (alice, bob, mut alice_ws, mut bob_ws) = club(&app, &api).await;

    let fresh = listing(&api, &bob.token, "alice", "club").await;
    assert_eq!(
        (&fresh["last_seq"], &fresh["read_seq"], &fresh["unread"]),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(
        fresh["name"], "Club",
        "the room's own fields are still there"
    );

    let mut ids = Vec::new();
    for i in 0..3 {
        let event = post(&mut alice_ws, &format!("a{i}")).await;
        bob_ws.next_json().await;
        ids.push(event["id"].clone());
    }
    post(&mut bob_ws, "b0").await;
    alice_ws.next_json().await;
    let bobs = listing(&api, &bob.token, "alice", "club").await;
    assert_eq!((&bobs["last_seq"], &bobs["unread"]), (&json!(4), &json!(3)));
    let alices = listing(&api, &alice.token, "alice", "club").await;
    assert_eq!(alices["unread"], 1, "only others' messages are unread");

    // An edit is stored (seq 5) but is not a new unread message.
    alice_ws
        .send_json(json!({"type": "update", "messageId": ids[2], "message": "a2!"}))
        .await;
    assert_eq!(alice_ws.next_json().await["action"], "update");
    bob_ws.next_json().await;
    let bobs = listing(&api, &bob.token, "alice", "club").await;
    assert_eq!((&bobs["last_seq"], &bobs["unread"]), (&json!(5), &json!(3)));

    // Bob reads up to a1 (seq 2): one unread left of alice's three.
    let (status, state) = put_read(&api, &bob.token, "/api/rooms/alice/club/read", json!(2)).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state, json!({"last_seq": 5, "read_seq": 2, "unread": 1}));
    // Never backwards, clamped to the last seq.
    let (_, state) = put_read(&api, &bob.token, "/api/rooms/alice/club/read", json!(1)).await;
    assert_eq!(state["read_seq"], 2);

    // Deleting a read message leaves the count; deleting the unread one lowers it.
    alice_ws
        .send_json(json!({"type": "delete", "messageId": ids[0]}))
        .await;
    assert_eq!(alice_ws.next_json().await["action"], "delete");
    bob_ws.next_json().await;
    assert_eq!(
        listing(&api, &bob.token, "alice", "club").await["unread"],
        1
    );
    alice_ws
        .send_json(json!({"type": "delete", "messageId": ids[2]}))
        .await;
    assert_eq!(alice_ws.next_json().await["action"], "delete");
    bob_ws.next_json().await;
    let bobs = listing(&api, &bob.token, "alice", "club").await;
    assert_eq!(
        (&bobs["last_seq"], &bobs["read_seq"], &bobs["unread"]),
        (&json!(7), &json!(2), &json!(0))
    );

    let (_, state) = put_read(&api, &bob.token, "/api/rooms/alice/club/read", json!(1000)).await;
    assert_eq!(state, json!({"last_seq": 7, "read_seq": 7, "unread": 0}));

    // Refusals: a bad body, a stranger, a missing room.
    let (status, body) = put_read(&api, &bob.token, "/api/rooms/alice/club/read", json!("x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let carol = api.signup("carol").await;
    let (status, _) = put_read(&api, &carol.token, "/api/rooms/alice/club/read", json!(1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = put_read(&api, &alice.token, "/api/rooms/alice/nope/read", json!(1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
