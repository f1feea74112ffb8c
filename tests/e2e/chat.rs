//! The seed's consumer: text, update and delete, broadcast to the room.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{post, spawn_app};

const SEED_NEW_FIELDS: [&str; 8] = [
    "id",
    "user",
    "user_id",
    "body",
    "created",
    "edited",
    "updated",
    "userAvatar",
];

#[tokio::test]
async fn both_members_receive_every_new_message_with_seed_fields_and_consecutive_seqs() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let room = &rooms[0];
    let mut alice = app.connect(room, 0).await;
    let mut bob = app.connect(room, 1).await;

    for (i, text) in ["first", "second", "third"].into_iter().enumerate() {
        alice
            .send_json(
                json!({"type": "text", "message": text, "timestamp": "2024-01-01T00:00:00Z"}),
            )
            .await;
        for ws in [&mut alice, &mut bob] {
            let event = ws.next_json().await;
            assert_eq!(event["type"], "chat_message");
            assert_eq!(event["action"], "new");
            for field in SEED_NEW_FIELDS {
                assert!(event.get(field).is_some(), "missing {field} in {event}");
            }
            assert_eq!(event["body"], text);
            assert_eq!(event["user"], room.members[0].username);
            assert_eq!(event["user_id"], room.members[0].user_id);
            assert_eq!(event["edited"], false);
            assert_eq!(event["userAvatar"], Value::Null);
            assert_eq!(event["seq"], i as u64 + 1);
            assert!(uuid::Uuid::parse_str(event["id"].as_str().expect("id is a string")).is_ok());
            let created = event["created"].as_str().expect("created is a string");
            assert!(
                time::OffsetDateTime::parse(
                    created,
                    &time::format_description::well_known::Rfc3339
                )
                .is_ok(),
                "{created} is RFC 3339"
            );
        }
    }
}

#[tokio::test]
async fn a_frame_without_type_is_a_text_message_and_the_body_is_trimmed() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    ws.send_json(json!({"message": "  hello  "})).await;
    let event = ws.next_json().await;
    assert_eq!(event["action"], "new");
    assert_eq!(event["body"], "hello");
}

#[tokio::test]
async fn the_author_can_edit_and_delete_and_everyone_sees_it() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut alice = app.connect(&rooms[0], 0).await;
    let mut bob = app.connect(&rooms[0], 1).await;
    let id = post(&mut alice, "draft").await["id"].clone();
    bob.next_json().await;

    alice
        .send_json(json!({"type": "update", "messageId": id, "message": "final", "timestamp": "x"}))
        .await;
    for ws in [&mut alice, &mut bob] {
        let event = ws.next_json().await;
        assert_eq!(
            event.as_object().map(|o| {
                let mut k: Vec<_> = o.keys().cloned().collect();
                k.sort();
                k
            }),
            Some(
                vec!["action", "body", "edited", "id", "seq", "type", "updated"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        assert_eq!(event["action"], "update");
        assert_eq!(event["id"], id);
        assert_eq!(event["body"], "final");
        assert_eq!(event["edited"], true);
        assert_eq!(event["seq"], 2);
    }

    alice
        .send_json(json!({"type": "delete", "messageId": id, "timestamp": "x"}))
        .await;
    for ws in [&mut alice, &mut bob] {
        let event = ws.next_json().await;
        assert_eq!(
            event,
            json!({"type": "chat_message", "action": "delete", "id": id, "seq": 3})
        );
    }
}

#[tokio::test]
async fn only_the_author_may_edit_or_delete_with_the_seed_sentences() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut alice = app.connect(&rooms[0], 0).await;
    let mut bob = app.connect(&rooms[0], 1).await;
    let id = post(&mut alice, "mine").await["id"].clone();
    bob.next_json().await;

    bob.send_json(json!({"type": "update", "messageId": id, "message": "yours now"}))
        .await;
    assert_eq!(
        bob.next_json().await,
        json!({"error": "You can only edit your own messages.", "code": "forbidden", "messageId": id})
    );
    bob.send_json(json!({"type": "delete", "messageId": id}))
        .await;
    assert_eq!(
        bob.next_json().await,
        json!({"error": "You can only delete your own messages.", "code": "forbidden", "messageId": id})
    );
    let missing = uuid::Uuid::new_v4().to_string();
    bob.send_json(json!({"type": "delete", "messageId": missing}))
        .await;
    assert_eq!(
        bob.next_json().await,
        json!({"error": "Message not found.", "code": "not_found", "messageId": missing})
    );
    // Nothing was broadcast for the refused attempts.
    alice.quiet_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_message_of_another_room_cannot_be_edited_from_this_socket() {
    let app = spawn_app().await;
    let rooms = app.fixture(2, 1).await;
    // user-0 hosts room-0; make them a participant of room-1 too.
    let state = app.server.as_ref().expect("running").state().clone();
    let storage = state.storage();
    let host0 = roomcast_domain::Username::parse(rooms[0].host.clone()).expect("name");
    let room1 = storage
        .room_by_address(
            &roomcast_domain::Username::parse(rooms[1].host.clone()).expect("name"),
            &roomcast_domain::RoomSlug::parse(rooms[1].slug.clone()).expect("slug"),
        )
        .await
        .expect("lookup")
        .expect("room-1");
    let user0 = storage
        .user_by_username(&host0)
        .await
        .expect("lookup")
        .expect("user-0");
    storage
        .add_participant(room1.id, user0.id)
        .await
        .expect("add");

    let mut in_room0 = app.connect(&rooms[0], 0).await;
    let id = post(&mut in_room0, "room-0 only").await["id"].clone();
    let room1_as_user0 = roomcast_app::FixtureRoom {
        host: rooms[1].host.clone(),
        slug: rooms[1].slug.clone(),
        members: vec![roomcast_app::FixtureMember {
            username: rooms[0].members[0].username.clone(),
            user_id: rooms[0].members[0].user_id.clone(),
            token: rooms[0].members[0].token.clone(),
        }],
    };
    let mut in_room1 = app.connect(&room1_as_user0, 0).await;
    in_room1
        .send_json(json!({"type": "update", "messageId": id, "message": "moved"}))
        .await;
    assert_eq!(
        in_room1.next_json().await,
        json!({"error": "Message not found.", "code": "not_found", "messageId": id})
    );
    in_room1
        .send_json(json!({"type": "delete", "messageId": id}))
        .await;
    assert_eq!(
        in_room1.next_json().await,
        json!({"error": "Message not found.", "code": "not_found", "messageId": id})
    );
    in_room0.quiet_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bodies_too_long_or_empty_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    ws.send_json(json!({"type": "text", "message": "é".repeat(501), "clientId": "c1"}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"error": "Message exceeds 500 characters.", "code": "too_long", "clientId": "c1"})
    );
    ws.send_json(json!({"type": "text", "message": "   "}))
        .await;
    let empty = ws.next_json().await;
    assert_eq!(empty["code"], "empty");
    assert!(empty["error"].as_str().is_some_and(|s| !s.is_empty()));
    // Exactly 500 characters is fine, and takes seq 1: nothing was stored before.
    let ok = post(&mut ws, &"é".repeat(500)).await;
    assert_eq!(ok["seq"], 1);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_usable() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    let bad: [&str; 6] = [
        "not json",
        "[1,2]",
        r#"{"type":"shout","message":"x"}"#,
        r#"{"type":"text"}"#,
        r#"{"type":"update","messageId":"not-a-uuid","message":"x"}"#,
        r#"{"type":"text","message":42}"#,
    ];
    for text in bad {
        ws.send_text(text).await;
        let err = ws.next_json().await;
        assert_eq!(err["code"], "bad_frame", "{text} -> {err}");
        assert!(err["error"].as_str().is_some_and(|s| !s.is_empty()));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(ws.next_json().await["code"], "bad_frame");
    let event = post(&mut ws, "still here").await;
    assert_eq!(event["seq"], 1);
}

#[tokio::test]
async fn a_retried_client_id_yields_the_original_message_once() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut alice = app.connect(&rooms[0], 0).await;
    let mut bob = app.connect(&rooms[0], 1).await;
    alice
        .send_json(json!({"type": "text", "message": "once", "clientId": "k-1"}))
        .await;
    let first = alice.next_json().await;
    assert_eq!(first["clientId"], "k-1");
    assert_eq!(bob.next_json().await, first);
    // The retry comes from a new connection, as after a reconnect.
    drop(alice);
    let mut again = app.connect(&rooms[0], 0).await;
    again
        .send_json(json!({"type": "text", "message": "once", "clientId": "k-1"}))
        .await;
    assert_eq!(again.next_json().await, first);
    bob.quiet_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_with_1009() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    ws.send_text(&format!(r#"{{"message":"{}"}}"#, "a".repeat(100 * 1024)))
        .await;
    assert_eq!(ws.closed().await, Some(1009));
}

#[tokio::test]
async fn typing_is_relayed_but_not_stored_nor_echoed() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut alice = app.connect(&rooms[0], 0).await;
    let mut bob = app.connect(&rooms[0], 1).await;
    alice.send_json(json!({"type": "typing"})).await;
    let typing =
        json!({"type": "chat_event", "action": "typing", "user": rooms[0].members[0].username});
    assert_eq!(bob.next_json().await, typing);
    assert_eq!(post(&mut alice, "after typing").await["seq"], 1);
    alice.quiet_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_flood_beyond_the_rate_limit_gets_rate_limited_errors_and_stores_nothing_extra() {
    let temp = tempfile::tempdir().expect("temp dir");
    let app = crate::harness::spawn_node(temp.path(), |args| args.rate_limit = 5).await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    for i in 0..30 {
        ws.send_json(json!({"message": format!("flood {i}"), "clientId": format!("f{i}")}))
            .await;
    }
    let (mut stored, mut limited) = (Vec::new(), 0);
    for _ in 0..30 {
        let frame = ws.next_json().await;
        if frame["code"] == "rate_limited" {
            assert!(
                frame["clientId"].is_string(),
                "the refused clientId comes back: {frame}"
            );
            limited += 1;
        } else {
            assert_eq!(frame["action"], "new", "{frame}");
            stored.push(frame["seq"].as_u64().expect("seq"));
        }
    }
    assert!(limited > 0, "a flood of 30 frames at 5/s must be limited");
    assert_eq!(
        stored,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "what passed was stored once, in order"
    );
}

/// A socket keeps many writes in flight; they must still be stored and
/// delivered in the order sent, a refused one answered in between, and a
/// client that closes right after a burst loses none of it.
#[tokio::test]
async fn a_burst_sent_without_waiting_arrives_in_the_order_sent() {
    let app = crate::harness::spawn_unlimited_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut alice = app.connect(&rooms[0], 0).await;
    let mut bob = app.connect(&rooms[0], 1).await;
    for i in 0..100 {
        alice.send_json(json!({"message": format!("m{i}")})).await;
    }
    let missing = uuid::Uuid::new_v4().to_string();
    alice
        .send_json(json!({"type": "update", "messageId": missing, "message": "x"}))
        .await;
    for i in 100..200 {
        alice.send_json(json!({"message": format!("m{i}")})).await;
    }
    for i in 0..200u64 {
        let event = bob.next_json().await;
        assert_eq!(event["body"], format!("m{i}"), "{event}");
        assert_eq!(event["seq"], i + 1);
    }
    let mut errors = 0;
    let mut news = 0;
    while news < 200 {
        let frame = alice.next_json().await;
        if frame["action"] == "new" {
            assert_eq!(frame["body"], format!("m{news}"));
            news += 1;
        } else {
            assert_eq!(frame["code"], "not_found", "{frame}");
            errors += 1;
        }
    }
    alice.quiet_for(Duration::from_millis(100)).await;
    assert_eq!(errors, 1);

    // A burst, then the close frame at once.
    let mut carol = app.connect(&rooms[0], 0).await;
    for i in 200..250 {
        carol.send_json(json!({"message": format!("m{i}")})).await;
    }
    carol.send(Message::Close(None)).await;
    for i in 200..250u64 {
        let event = bob.next_json().await;
        assert_eq!(event["body"], format!("m{i}"), "{event}");
        assert_eq!(event["seq"], i + 1);
    }
}

#[tokio::test]
async fn a_typing_storm_leaves_every_other_reader_connected_and_receiving() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 3).await;
    let room = &rooms[0];
    let mut readers = vec![app.connect(room, 1).await];
    // A reader with a tiny receive buffer, so it lags at once.
    let url = app.ws_url(&room.host, &room.slug);
    let cookie = format!("JWT={}", room.members[2].token);
    readers.push(
        crate::harness::Ws::connect_with_small_buffer(
            &url,
            &[("Cookie", &cookie), ("Origin", &app.origin())],
        )
        .await,
    );
    let mut alice = app.connect(room, 0).await;
    let typing = Message::text(json!({"type": "typing"}).to_string());
    alice.send_batch(std::iter::repeat_n(typing, 5000)).await;
    let after = post(&mut alice, "after the storm").await;
    for reader in &mut readers {
        loop {
            match reader.next_frame_or_close().await {
                Ok(frame) if frame["action"] == "typing" => continue,
                Ok(frame) => {
                    assert_eq!(frame, after, "the stored event, after typing only");
                    break;
                }
                Err(code) => panic!("a reader was closed by the storm: {code:?}"),
            }
        }
    }
}
