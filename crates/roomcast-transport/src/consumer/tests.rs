//! The consumer's rules through channels, without a server: the socket is
//! a pair of channels, the storage SQLite in memory.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::stream;
use roomcast_broadcast::HubConfig;
use roomcast_domain::{MessageBody, Room, RoomSlug, User, Username};
use roomcast_storage::{NewRoom, NewUser};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

use super::{End, MAX_WRITES_IN_FLIGHT, Session, TOO_SLOW, close, run};
use crate::{AppState, JwtKeys, TransportConfig, hub_builder};

const PATIENCE: Duration = Duration::from_secs(5);

struct Fixture {
    app: AppState,
    room: Room,
    alice: User,
    bob: User,
}

/// Defaults, but with per-user rate limits off (they have their own tests):
/// these tests send faster than a person.
fn config() -> TransportConfig {
    TransportConfig {
        rate_limit: crate::config::RateLimitConfig {
            per_second: 0,
            ..Default::default()
        },
        ..TransportConfig::default()
    }
}

async fn fixture(config: TransportConfig) -> Fixture {
    let storage = roomcast_storage::connect("sqlite::memory:")
        .await
        .expect("in-memory storage");
    let hub = hub_builder(&storage, HubConfig::default()).standalone();
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let user = storage
            .create_user(NewUser {
                username: Username::parse(name).expect("name"),
                name: name.to_owned(),
                email: None,
                password_hash: None,
            })
            .await
            .expect("user");
        users.push(user);
    }
    let room = storage
        .create_room(NewRoom {
            host: users[0].id,
            slug: RoomSlug::parse("lobby").expect("slug"),
            name: "Lobby".into(),
            description: String::new(),
            visibility: roomcast_domain::Visibility::Private,
        })
        .await
        .expect("room");
    storage
        .add_participant(room.id, users[1].id)
        .await
        .expect("participant");
    let bob = users.pop().expect("bob");
    let alice = users.pop().expect("alice");
    let app = AppState::new(storage, hub, JwtKeys::new(b"test secret"), config);
    Fixture {
        app,
        room,
        alice,
        bob,
    }
}

/// The client's end of a socket whose server end is a running consumer.
struct Peer {
    to_server: mpsc::Sender<Result<Message, axum::Error>>,
    from_server: mpsc::Receiver<Message>,
    done: JoinHandle<End>,
}

struct Open {
    since: Option<roomcast_domain::Seq>,
    expires: Option<time::OffsetDateTime>,
    /// Frames the server may have written and the client not yet read.
    window: usize,
}

impl Default for Open {
    fn default() -> Self {
        Self {
            since: None,
            expires: None,
            window: 1024,
        }
    }
}

async fn open(f: &Fixture, user: &User, how: Open) -> Peer {
    let app = &f.app;
    let feed = app.hub().join(f.room.id).await.expect("join");
    let (current, first_kept) = app.storage().log_bounds(f.room.id).await.expect("bounds");
    let session = Box::new(Session {
        user: user.clone(),
        room: f.room.clone(),
        since: how.since,
        expires: how.expires,
        login: None,
        slot: app.try_connect(user.id).expect("a slot"),
        feed,
        current,
        first_kept,
    });
    let (to_server, mut incoming) = mpsc::channel(1);
    let (outgoing, from_server) = mpsc::channel(how.window);
    let reads = stream::poll_fn(move |cx| incoming.poll_recv(cx));
    let done = tokio::spawn(run(
        app.clone(),
        PollSender::new(outgoing),
        Box::pin(reads),
        session,
    ));
    Peer {
        to_server,
        from_server,
        done,
    }
}

impl Peer {
    async fn send(&self, frame: Value) {
        self.send_message(Message::text(frame.to_string())).await;
    }

    async fn send_message(&self, message: Message) {
        self.to_server
            .send(Ok(message))
            .await
            .expect("consumer reading");
    }

    async fn next(&mut self) -> Message {
        tokio::time::timeout(PATIENCE, self.from_server.recv())
            .await
            .expect("a frame in time")
            .expect("socket open")
    }

    /// The next text frame, skipping presence news.
    async fn next_json(&mut self) -> Value {
        loop {
            match self.next().await {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    let presence = matches!(
                        frame["action"].as_str(),
                        Some("presence" | "join" | "leave")
                    );
                    if !presence {
                        return frame;
                    }
                }
                Message::Ping(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn end(self) -> End {
        drop(self.from_server);
        tokio::time::timeout(PATIENCE, self.done)
            .await
            .expect("consumer ended in time")
            .expect("consumer task")
    }
}

fn text(body: &str, client_id: &str) -> Value {
    json!({"type": "text", "message": body, "clientId": client_id})
}

#[tokio::test]
async fn replies_leave_in_the_order_their_frames_came() {
    let f = fixture(config()).await;
    let mut alice = open(&f, &f.alice, Open::default()).await;
    let missing = uuid::Uuid::new_v4().to_string();
    alice.send(text("one", "c1")).await;
    alice
        .send(json!({"type": "update", "messageId": missing, "message": "x"}))
        .await;
    alice.send_message(Message::text("not json")).await;
    alice.send(text("", "c2")).await;
    alice
        .send(json!({"type": "delete", "messageId": missing}))
        .await;
    let first = alice.next_json().await;
    assert_eq!(
        (first["action"].clone(), first["body"].clone()),
        (json!("new"), json!("one"))
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = alice.next_json().await;
        seen.push((
            e["code"].clone(),
            e["messageId"].clone(),
            e["clientId"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            (json!("not_found"), json!(missing), Value::Null),
            (json!("bad_frame"), Value::Null, Value::Null),
            (json!("empty"), Value::Null, json!("c2")),
            (json!("not_found"), json!(missing), Value::Null),
        ]
    );
}

#[tokio::test]
async fn a_client_that_does_not_read_is_not_read_from_beyond_the_writes_in_flight() {
    let f = fixture(config()).await;
    let mut alice = open(
        &f,
        &f.alice,
        Open {
            window: 1,
            ..Open::default()
        },
    )
    .await;
    // Every frame gets a reply; the client reads none of them.
    let mut sent = 0;
    for _ in 0..(4 * MAX_WRITES_IN_FLIGHT) {
        let send = alice.send_message(Message::text("not json"));
        if tokio::time::timeout(Duration::from_millis(200), send)
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 3 * MAX_WRITES_IN_FLIGHT,
        "the reader kept reading: {sent} frames taken"
    );
    // Once the client reads, everything is answered, nothing lost.
    let mut answered = 0;
    while answered < sent {
        let frame = alice.next_json().await;
        assert_eq!(frame["code"], "bad_frame");
        answered += 1;
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_after_the_writes_before_it() {
    let f = fixture(config()).await;
    let mut alice = open(&f, &f.alice, Open::default()).await;
    alice.send(text("before", "c1")).await;
    let too_long =
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size: 1 << 20,
            max_size: 1 << 16,
        });
    alice
        .to_server
        .send(Err(axum::Error::new(too_long)))
        .await
        .expect("reading");
    assert_eq!(alice.next_json().await["body"], "before");
    loop {
        match alice.next().await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, close::TOO_BIG);
                break;
            }
            Message::Close(None) => panic!("a close without a code"),
            _ => {}
        }
    }
    assert_eq!(
        alice.end().await,
        End::Close(close::TOO_BIG, "Message too big.")
    );
}

#[tokio::test]
async fn a_reader_that_stops_taking_frames_is_closed_as_too_slow() {
    let f = fixture(TransportConfig {
        write_timeout: Duration::from_millis(50),
        ..config()
    })
    .await;
    let stalled = open(
        &f,
        &f.alice,
        Open {
            window: 1,
            ..Open::default()
        },
    )
    .await;
    for i in 0..5 {
        let body = MessageBody::parse(&format!("m{i}")).expect("body");
        f.app
            .publisher()
            .post(f.room.id, &f.bob, body, None)
            .await
            .expect("posted");
    }
    let end = tokio::time::timeout(PATIENCE, stalled.done)
        .await
        .expect("closed in time")
        .expect("task");
    assert_eq!(end, End::Close(close::TRY_AGAIN, TOO_SLOW));
}

#[tokio::test]
async fn an_expired_token_closes_with_1008() {
    let f = fixture(config()).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(100);
    let alice = open(
        &f,
        &f.alice,
        Open {
            expires: Some(soon),
            ..Open::default()
        },
    )
    .await;
    let end = tokio::time::timeout(PATIENCE, alice.done)
        .await
        .expect("closed in time")
        .expect("task");
    assert_eq!(end, End::Close(close::POLICY, "Token expired."));
}

#[tokio::test]
async fn a_clients_close_is_answered_with_its_own_code() {
    let f = fixture(config()).await;
    let mut alice = open(&f, &f.alice, Open::default()).await;
    let bye = CloseFrame {
        code: 4001,
        reason: "bye".into(),
    };
    alice.send_message(Message::Close(Some(bye.clone()))).await;
    loop {
        if let Message::Close(frame) = alice.next().await {
            assert_eq!(frame, Some(bye.clone()));
            break;
        }
    }
    assert_eq!(alice.end().await, End::Answer(Some(bye)));
}

#[tokio::test]
async fn a_silent_peer_is_pinged_then_dropped_and_an_answering_one_kept() {
    let f = fixture(TransportConfig {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(250),
        ..config()
    })
    .await;
    let mut silent = open(&f, &f.alice, Open::default()).await;
    let mut answering = open(&f, &f.bob, Open::default()).await;
    let answer = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
        let mut pings = 0;
        while let Ok(Some(message)) =
            tokio::time::timeout_at(deadline, answering.from_server.recv()).await
        {
            if let Message::Ping(data) = message {
                pings += 1;
                answering.send_message(Message::Pong(data)).await;
            }
        }
        (pings, answering)
    });
    loop {
        match silent.next().await {
            Message::Ping(_) => break,
            _ => continue,
        }
    }
    let end = tokio::time::timeout(PATIENCE, silent.done)
        .await
        .expect("dropped in time")
        .expect("task");
    assert_eq!(end, End::Dead);
    let (pings, answering) = answer.await.expect("answerer");
    assert!(pings >= 2, "pinged while quiet: {pings}");
    assert!(!answering.done.is_finished(), "a peer that answers stays");
}

#[tokio::test]
async fn a_typing_storm_never_closes_a_reader_and_is_not_echoed() {
    let f = fixture(config()).await;
    let alice = open(&f, &f.alice, Open::default()).await;
    let mut bob = open(
        &f,
        &f.bob,
        Open {
            window: 4,
            ..Open::default()
        },
    )
    .await;
    for _ in 0..5000 {
        alice.send(json!({"type": "typing"})).await;
    }
    alice.send(text("after the storm", "c1")).await;
    // Bob reads late and slowly: typing frames were skipped, not queued,
    // and the stored event is there.
    loop {
        let frame = bob.next_json().await;
        if frame["action"] == "new" {
            assert_eq!(frame["body"], "after the storm");
            break;
        }
        assert_eq!(frame["action"], "typing");
    }
    assert!(!bob.done.is_finished());
    let mut alice = alice;
    loop {
        let frame = alice.next_json().await;
        assert_ne!(frame["action"], "typing", "typing came back to its sender");
        if frame["action"] == "new" {
            break;
        }
    }
}
