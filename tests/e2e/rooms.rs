//! PROTOCOL.md sections 2, 3, 6 and 7 for a user's rooms: slugs derived
//! from names, read positions and receipts, unread counts in the room list,
//! and the user socket.

use reqwest::StatusCode;
use serde_json::{Value, json};

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use roomcast_client::{Auth, Client, ClientConfig, ClientEvent};
use roomcast_domain::Seq;
use roomcast_domain::wire::{ChatEvent, ServerFrame};

use crate::harness::{PATIENCE, TestApp, Ws, spawn_app};
use crate::http_api::{Account, Api, ws};
use crate::multinode::{fleet, shared_redis_url, unique_prefix};

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
        let event = say(&mut alice_ws, &format!("a{i}")).await;
        next_message(&mut bob_ws).await;
        ids.push(event["id"].clone());
    }
    say(&mut bob_ws, "b0").await;
    next_message(&mut alice_ws).await;
    let bobs = listing(&api, &bob.token, "alice", "club").await;
    assert_eq!((&bobs["last_seq"], &bobs["unread"]), (&json!(4), &json!(3)));
    let alices = listing(&api, &alice.token, "alice", "club").await;
    assert_eq!(alices["unread"], 1, "only others' messages are unread");

    // An edit is stored (seq 5) but is not a new unread message.
    alice_ws
        .send_json(json!({"type": "update", "messageId": ids[2], "message": "a2!"}))
        .await;
    assert_eq!(next_message(&mut alice_ws).await["action"], "update");
    next_message(&mut bob_ws).await;
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
    assert_eq!(next_message(&mut alice_ws).await["action"], "delete");
    next_message(&mut bob_ws).await;
    assert_eq!(
        listing(&api, &bob.token, "alice", "club").await["unread"],
        1
    );
    alice_ws
        .send_json(json!({"type": "delete", "messageId": ids[2]}))
        .await;
    assert_eq!(next_message(&mut alice_ws).await["action"], "delete");
    next_message(&mut bob_ws).await;
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
    // The club is private (the default): for a stranger it does not exist.
    let (status, _) = put_read(&api, &carol.token, "/api/rooms/alice/club/read", json!(1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = put_read(&api, &alice.token, "/api/rooms/alice/nope/read", json!(1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The next stored event (`chat_message`) on a room socket.
async fn next_message(ws: &mut Ws) -> Value {
    next_matching(ws, |f| f["type"] == "chat_message").await
}

/// Posts a text frame and returns the `new` event the sender gets back.
async fn say(ws: &mut Ws, body: &str) -> Value {
    ws.send_json(json!({"type": "text", "message": body})).await;
    let event = next_message(ws).await;
    assert_eq!(event["action"], "new", "{event}");
    event
}

/// The next frame of `ws` that `wanted` accepts, skipping ephemeral
/// events it does not (presence, join, leave, typing, other receipts).
async fn next_matching(ws: &mut Ws, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let frame = ws.next_json().await;
        if wanted(&frame) {
            return frame;
        }
        assert_eq!(
            frame["type"], "chat_event",
            "a stored event or error where none was expected: {frame}"
        );
    }
}

fn receipt(frame: &Value) -> bool {
    frame["type"] == "chat_event" && frame["action"] == "read"
}

#[tokio::test]
async fn read_frames_move_the_position_and_others_get_coalesced_receipts() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_alice, bob, mut alice_ws, mut bob_ws) = club(&app, &api).await;
    for i in 0..4 {
        say(&mut alice_ws, &format!("a{i}")).await;
        next_message(&mut bob_ws).await;
    }

    bob_ws.send_json(json!({"type": "read", "seq": 1})).await;
    let first = next_matching(&mut alice_ws, receipt).await;
    assert_eq!(
        first,
        json!({"type": "chat_event", "action": "read", "user": "bob", "seq": 1})
    );
    // A fast reader: three positions at once become one receipt, the latest.
    for seq in [2, 3, 4] {
        bob_ws.send_json(json!({"type": "read", "seq": seq})).await;
    }
    let second = next_matching(&mut alice_ws, receipt).await;
    assert_eq!(second["seq"], 4, "{second}");
    // Backwards and repeated positions are not news.
    bob_ws.send_json(json!({"type": "read", "seq": 2})).await;
    let state = listing(&api, &bob.token, "alice", "club").await;
    assert_eq!(
        (&state["read_seq"], &state["unread"]),
        (&json!(4), &json!(0))
    );
    alice_ws
        .quiet_for(std::time::Duration::from_millis(700))
        .await;

    // A malformed read frame is refused; the socket stays open.
    bob_ws.send_json(json!({"type": "read", "seq": "x"})).await;
    let refused = next_matching(&mut bob_ws, |f| f.get("error").is_some()).await;
    assert_eq!(refused["code"], "bad_frame", "{refused}");

    // A read over HTTP is told to the room the same way.
    say(&mut alice_ws, "a4").await;
    next_message(&mut bob_ws).await;
    let (status, _) = put_read(&api, &bob.token, "/api/rooms/alice/club/read", json!(5)).await;
    assert_eq!(status, StatusCode::OK);
    let third = next_matching(&mut alice_ws, receipt).await;
    assert_eq!((&third["user"], &third["seq"]), (&json!("bob"), &json!(5)));
}

fn user_socket_url(app: &TestApp) -> String {
    format!("ws://{}/ws/user", app.addr)
}

async fn user_socket(app: &TestApp, token: &str) -> Ws {
    Ws::connect(
        &user_socket_url(app),
        &[
            ("Cookie", &format!("JWT={token}")),
            ("Origin", &app.origin()),
        ],
    )
    .await
    .expect("user socket accepted")
}

fn activity(frame: &Value) -> bool {
    frame["action"] == "activity"
}

#[tokio::test]
async fn the_user_socket_refuses_what_the_room_socket_refuses() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    let no_token = Ws::connect(&user_socket_url(&app), &[("Origin", &app.origin())]).await;
    assert_eq!(no_token.err().map(|r| r.status), Some(401));
    let bad_origin = Ws::connect(
        &user_socket_url(&app),
        &[
            ("Cookie", &format!("JWT={}", alice.token)),
            ("Origin", "http://evil.example"),
        ],
    )
    .await;
    let refusal = bad_origin.err().expect("refused");
    assert_eq!(refusal.status, 403);
    assert!(refusal.body["error"].is_string(), "{}", refusal.body);
}

#[tokio::test]
async fn the_user_socket_reports_activity_and_membership_without_bodies() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (alice, bob, mut alice_ws, mut bob_ws) = club(&app, &api).await;
    let mut bob_user = user_socket(&app, &bob.token).await;

    let posted = say(&mut alice_ws, "a secret body").await;
    next_message(&mut bob_ws).await;
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!(
        frame,
        json!({"type": "chat_event", "action": "activity", "room": "alice/club", "seq": 1, "unread": 1})
    );
    // An edit is stored (a new seq) but not a new unread message.
    alice_ws
        .send_json(json!({"type": "update", "messageId": posted["id"], "message": "edited"}))
        .await;
    next_message(&mut alice_ws).await;
    next_message(&mut bob_ws).await;
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!((&frame["seq"], &frame["unread"]), (&json!(2), &json!(1)));
    // Bob reads (over his room socket): his user socket hears the new count.
    bob_ws.send_json(json!({"type": "read", "seq": 2})).await;
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!((&frame["seq"], &frame["unread"]), (&json!(2), &json!(0)));
    // Deleting an unread message lowers the count.
    let second = say(&mut alice_ws, "second").await;
    next_message(&mut bob_ws).await;
    assert_eq!(next_matching(&mut bob_user, activity).await["unread"], 1);
    alice_ws
        .send_json(json!({"type": "delete", "messageId": second["id"]}))
        .await;
    next_message(&mut alice_ws).await;
    next_message(&mut bob_ws).await;
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!((&frame["seq"], &frame["unread"]), (&json!(4), &json!(0)));

    // Membership: added to a new room, its activity follows; removed, silence.
    let (status, _) = api
        .post("/api/rooms", Some(&alice.token), json!({"name": "Second"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = api
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/second/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let added = next_matching(&mut bob_user, |f| f["action"] == "added").await;
    assert_eq!(
        added,
        json!({"type": "chat_event", "action": "added", "room": "alice/second"})
    );
    let (status, _) = api
        .post(
            "/api/rooms/alice/second/messages",
            Some(&alice.token),
            json!({"body": "welcome"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!(
        (&frame["room"], &frame["seq"], &frame["unread"]),
        (&json!("alice/second"), &json!(1), &json!(1))
    );
    let (status, _, _) = api
        .call(
            reqwest::Method::DELETE,
            "/api/rooms/alice/second/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = next_matching(&mut bob_user, |f| f["action"] == "removed").await;
    assert_eq!(removed["room"], "alice/second");
    api.post(
        "/api/rooms/alice/second/messages",
        Some(&alice.token),
        json!({"body": "bob is gone"}),
    )
    .await;
    bob_user
        .quiet_for(std::time::Duration::from_millis(300))
        .await;

    // Nothing the user socket sent ever carried a body; its close is answered.
    bob_user
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await;
    assert_eq!(bob_user.closed().await, Some(1000));
}

#[tokio::test]
async fn user_sockets_and_receipts_cross_nodes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = shared_redis_url();
    let nodes = fleet(dir.path(), 3, &redis, &unique_prefix()).await;
    let api_a = Api::new(&nodes[0]);
    let api_c = Api::new(&nodes[2]);
    let (alice, bob, mut alice_ws, _bob_ws) = club(&nodes[0], &api_a).await;
    // Bob's user socket and a second room socket of his on other nodes.
    let mut bob_user = user_socket(&nodes[1], &bob.token).await;
    let mut bob_far = ws(&nodes[2], "alice", "club", &bob.token)
        .await
        .expect("bob on node c");

    say(&mut alice_ws, "across").await;
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!(
        (&frame["room"], &frame["unread"]),
        (&json!("alice/club"), &json!(1))
    );
    next_matching(&mut bob_far, |f| f["type"] == "chat_message").await;

    // Bob reads on node c: alice (node a) gets the receipt, bob's user
    // socket (node b) the new count.
    bob_far.send_json(json!({"type": "read", "seq": 1})).await;
    let got = next_matching(&mut alice_ws, receipt).await;
    assert_eq!((&got["user"], &got["seq"]), (&json!("bob"), &json!(1)));
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!(frame["unread"], 0);

    // Added on node c, told on node b.
    let (status, _) = api_c
        .post("/api/rooms", Some(&alice.token), json!({"name": "Far"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = api_c
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/far/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let added = next_matching(&mut bob_user, |f| f["action"] == "added").await;
    assert_eq!(added["room"], "alice/far");
    api_c
        .post(
            "/api/rooms/alice/far/messages",
            Some(&alice.token),
            json!({"body": "far away"}),
        )
        .await;
    let frame = next_matching(&mut bob_user, activity).await;
    assert_eq!(
        (&frame["room"], &frame["unread"]),
        (&json!("alice/far"), &json!(1))
    );
    // Removed on node a, told on node b.
    let (status, _, _) = api_a
        .call(
            reqwest::Method::DELETE,
            "/api/rooms/alice/far/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = next_matching(&mut bob_user, |f| f["action"] == "removed").await;
    assert_eq!(removed["room"], "alice/far");
}

#[tokio::test]
async fn the_rust_client_reads_and_knows_who_is_here() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_alice, bob, mut alice_ws, _bob_ws) = club(&app, &api).await;
    say(&mut alice_ws, "for bob").await;
    let config = ClientConfig::new(
        &format!("ws://{}/ws/chat", app.addr),
        "alice",
        "club",
        Auth::Bearer(bob.token.clone()),
    )
    .expect("config")
    .with_origin(app.origin());
    let (client, mut events) = Client::connect(config);
    // Presence comes once the socket is live, after the replay of seq 1.
    loop {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("an event in time")
            .expect("client running");
        if let ClientEvent::Frame(ServerFrame::Event(ChatEvent::Presence { .. })) = event {
            break;
        }
    }
    let names: Vec<String> = client.presence().iter().map(|u| u.to_string()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(client.last_seq(), Seq::new(1));
    client.read(client.last_seq()).await.expect("read sent");
    let got = next_matching(&mut alice_ws, receipt).await;
    assert_eq!((&got["user"], &got["seq"]), (&json!("bob"), &json!(1)));
    assert_eq!(
        listing(&api, &bob.token, "alice", "club").await["unread"],
        0
    );
    assert!(client.close().await, "a clean close");
}
