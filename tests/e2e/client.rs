//! `roomcast-client` against a real server: two clients chat, the server
//! dies and comes back on the same data and port, and both clients resume
//! on their own with nothing missed and nothing twice.

use std::time::Duration;

use roomcast_app::{FixtureRoom, open_storage};
use roomcast_client::{
    Api, Auth, Backoff, Client, ClientConfig, ClientError, ClientEvent, Events, Status,
};
use roomcast_domain::wire::{ChatMessage, NewFrame, ServerFrame};
use roomcast_domain::{MessageBody, Seq, Username};
use roomcast_storage::NewMessage;

use crate::harness::{Options, PATIENCE, TestApp, spawn_app_in, spawn_node};
use crate::http_api::Api as TestApi;

fn config(app: &TestApp, room: &FixtureRoom, auth: Auth) -> ClientConfig {
    ClientConfig::new(
        &format!("ws://{}/ws/chat", app.addr),
        &room.host,
        &room.slug,
        auth,
    )
    .expect("valid room")
    .with_origin(app.origin())
    .with_backoff(Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    })
}

fn cookie(room: &FixtureRoom, member: usize) -> Auth {
    Auth::Cookie {
        name: "JWT".into(),
        token: room.members[member].token.clone(),
    }
}

/// A client's event stream, remembering the seq of every stored event it
/// delivered.
struct Watcher {
    events: Events,
    seqs: Vec<Seq>,
}

impl Watcher {
    fn new(events: Events) -> Self {
        Self {
            events,
            seqs: Vec::new(),
        }
    }

    /// Reads events until a stored one satisfies `done`; returns it.
    async fn until(&mut self, done: impl Fn(&ChatMessage) -> bool) -> ChatMessage {
        loop {
            let event = tokio::time::timeout(PATIENCE, self.events.next())
                .await
                .expect("an event in time")
                .expect("client still running");
            if let ClientEvent::Frame(frame @ ServerFrame::Message(_)) = &event {
                self.seqs
                    .push(frame.seq().expect("stored events carry seq"));
                let ServerFrame::Message(message) = frame else {
                    unreachable!()
                };
                if done(message) {
                    return message.clone();
                }
            }
        }
    }

    async fn new_with_body(&mut self, body: &str) -> NewFrame {
        match self
            .until(|m| matches!(m, ChatMessage::New(n) if n.body == body))
            .await
        {
            ChatMessage::New(n) => n,
            _ => unreachable!(),
        }
    }

    async fn until_seq(&mut self, seq: Seq) {
        if self.seqs.last().is_some_and(|&last| last >= seq) {
            return;
        }
        self.until(|m| seq_of(m) >= seq).await;
    }
}

fn seq_of(m: &ChatMessage) -> Seq {
    match m {
        ChatMessage::New(f) => f.seq,
        ChatMessage::Update(f) => f.seq,
        ChatMessage::Delete(f) => f.seq,
    }
}

fn bodies(client: &Client) -> Vec<String> {
    client.messages().into_iter().map(|m| m.body).collect()
}

async fn wait_status(client: &Client, want: impl Fn(&Status) -> bool) {
    let mut changes = client.status_changes();
    tokio::time::timeout(PATIENCE, changes.wait_for(|s| want(s)))
        .await
        .expect("status in time")
        .expect("client still running");
}

#[tokio::test]
async fn two_clients_resume_after_a_server_restart_with_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let drop_mode = Options {
        drop_on_shutdown: true,
        ..Options::default()
    };
    let mut app = spawn_app_in(dir.path(), drop_mode.clone()).await;
    let rooms = app.fixture(1, 2).await;
    let room = &rooms[0];
    let (alice, events) = Client::connect(config(&app, room, cookie(room, 0)));
    let mut alice_seen = Watcher::new(events);
    let bearer = Auth::Bearer(room.members[1].token.clone());
    let (bob, events) = Client::connect(config(&app, room, bearer));
    let mut bob_seen = Watcher::new(events);
    wait_status(&alice, Status::is_connected).await;
    wait_status(&bob, Status::is_connected).await;

    // Send, update, delete: both lists follow.
    let client_id = alice.send("hello").await.expect("send");
    let hello = alice_seen.new_with_body("hello").await;
    assert_eq!(hello.client_id.as_deref(), Some(client_id.as_str()));
    alice
        .update(hello.id, "hello, edited")
        .await
        .expect("update");
    alice.send("second").await.expect("send");
    let second = alice_seen.new_with_body("second").await;
    alice.delete(second.id).await.expect("delete");
    alice_seen.until_seq(Seq::new(4)).await;
    bob_seen.until_seq(Seq::new(4)).await;
    assert_eq!(bodies(&alice), ["hello, edited"]);
    assert_eq!(bodies(&bob), ["hello, edited"]);
    assert!(alice.messages()[0].edited);
    assert!(alice.pending().is_empty());

    // The server dies without a close frame.
    app.shutdown().await;
    let reconnecting = |s: &Status| matches!(s, Status::Reconnecting { .. });
    wait_status(&alice, reconnecting).await;
    wait_status(&bob, reconnecting).await;

    // While it is down: alice's send waits, bob cannot edit, and another
    // node (here: storage itself) stores a message nobody connected saw.
    let queued = alice.send("sent while down").await.expect("queued");
    assert_eq!(alice.pending().len(), 1);
    assert!(matches!(
        bob.update(hello.id, "nope").await,
        Err(ClientError::NotConnected)
    ));
    {
        let storage = open_storage(&app.common()).await.expect("storage");
        let author = storage
            .user_by_username(&Username::parse(&room.members[1].username).expect("name"))
            .await
            .expect("read")
            .expect("bob exists");
        let host = Username::parse(&room.host).expect("host");
        let slug = roomcast_domain::RoomSlug::parse(&room.slug).expect("slug");
        let stored_room = storage
            .room_by_address(&host, &slug)
            .await
            .expect("read")
            .expect("room exists");
        storage
            .post_message(NewMessage {
                room_id: stored_room.id,
                author,
                body: MessageBody::parse("stored while down").expect("body"),
                client_id: None,
            })
            .await
            .expect("stored");
    }

    // Back on the same data and port: both resume by themselves.
    let mut again = spawn_app_in(
        dir.path(),
        Options {
            port: Some(app.addr.port()),
            ..drop_mode
        },
    )
    .await;
    let resent = alice_seen.new_with_body("sent while down").await;
    assert_eq!(resent.client_id.as_deref(), Some(queued.as_str()));
    alice_seen.until_seq(Seq::new(6)).await;
    bob_seen.until_seq(Seq::new(6)).await;

    let every_seq: Vec<Seq> = (1..=6).map(Seq::new).collect();
    assert_eq!(alice_seen.seqs, every_seq, "alice: a gap or a duplicate");
    assert_eq!(bob_seen.seqs, every_seq, "bob: a gap or a duplicate");
    let want = ["hello, edited", "stored while down", "sent while down"];
    assert_eq!(bodies(&alice), want);
    assert_eq!(bodies(&bob), want);
    assert!(alice.pending().is_empty());
    assert_eq!(alice.last_seq(), 6);
    assert_eq!(bob.last_seq(), 6);

    // Storage agrees: six events, the queued message stored once.
    let server = again.server.as_ref().expect("running");
    let storage = server.state().storage();
    let room_id = storage
        .room_by_address(
            &Username::parse(&room.host).expect("host"),
            &roomcast_domain::RoomSlug::parse(&room.slug).expect("slug"),
        )
        .await
        .expect("read")
        .expect("room")
        .id;
    let stored = storage
        .events_since(room_id, Seq::ZERO, 100)
        .await
        .expect("events");
    assert_eq!(stored.len(), 6);
    let live = storage.history(room_id, None, 100).await.expect("history");
    let live: Vec<_> = live.iter().map(|m| m.id).collect();
    let listed: Vec<_> = alice.messages().iter().map(|m| m.id).collect();
    assert_eq!(listed, live);

    alice.close().await;
    bob.close().await;
    again.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_stops_the_client_instead_of_retrying() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_app_in(dir.path(), Options::default()).await;
    let rooms = app.fixture(1, 1).await;
    let bad = Auth::Bearer("not-a-token".into());
    let (client, _events) = Client::connect(config(&app, &rooms[0], bad));
    wait_status(&client, |s| matches!(s, Status::Failed(_))).await;
    match client.status() {
        Status::Failed(e) => assert!(
            matches!(*e, ClientError::Refused { status: 401, .. }),
            "{e}"
        ),
        other => panic!("expected failed, got {other:?}"),
    }
    client.close().await;
    app.shutdown().await;
}

/// The password `TestApi::signup` gives every account.
const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn a_token_provider_keeps_a_client_connected_across_token_expiry_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Tokens live three seconds: the test spans several.
    let app = spawn_node(dir.path(), |args| args.access_token_ttl = 3).await;
    let setup = TestApi::new(&app);
    let alice = setup.signup("alice").await;
    setup.signup("bob").await;
    let (status, body) = setup
        .post(
            "/api/rooms",
            Some(&alice.token),
            serde_json::json!({"name": "Renewals", "slug": "renewals"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = setup
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/renewals/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");

    // Alice chats through the client, logged in with her password; her
    // tokens are renewed by the provider (refresh token, else password).
    let base = format!("http://{}", app.addr);
    let api = Api::new(&base).expect("api");
    let tokens = roomcast_client::login(&base, "alice", PASSWORD)
        .await
        .expect("login");
    let config = ClientConfig::new(
        &format!("ws://{}/ws/chat", app.addr),
        "alice",
        "renewals",
        Auth::Bearer(tokens.token.clone()),
    )
    .expect("valid room")
    .with_origin(app.origin())
    .with_token_provider(api.password_provider("alice", PASSWORD, Some(&tokens)));
    let (client, events) = Client::connect(config);
    let mut seen = Watcher::new(events);
    let mut statuses = client.subscribe();
    wait_status(&client, Status::is_connected).await;

    // Bob posts over HTTP, one message every 400 ms for three token
    // lifetimes, renewing his own token as he goes; alice posts too.
    let bob = api.password_provider("bob", PASSWORD, None);
    let http = reqwest::Client::new();
    let posts = 24;
    for n in 1..=posts {
        if n % 8 == 0 {
            client.send(&format!("alice {n}")).await.expect("send");
            continue;
        }
        let token = bob.token().await.expect("bob's token");
        let answer = http
            .post(format!("{base}/api/rooms/alice/renewals/messages"))
            .bearer_auth(token)
            .json(&serde_json::json!({"body": format!("bob {n}")}))
            .send()
            .await
            .expect("post");
        assert!(answer.status().is_success(), "{}", answer.status());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    seen.until_seq(Seq::new(posts)).await;

    let every_seq: Vec<Seq> = (1..=posts).map(Seq::new).collect();
    assert_eq!(seen.seqs, every_seq, "a gap or a duplicate");
    assert_eq!(client.messages().len(), posts as usize);
    assert!(client.pending().is_empty());
    // It did renew: it reconnected for a new token (attempt 0), and never
    // failed or backed off.
    let mut renewals = 0;
    while let Some(event) = statuses.try_next() {
        match event {
            ClientEvent::Status(Status::Reconnecting { attempt: 0, .. }) => renewals += 1,
            ClientEvent::Status(other @ (Status::Reconnecting { .. } | Status::Failed(_))) => {
                panic!("{other:?}")
            }
            _ => {}
        }
    }
    assert!(renewals >= 2, "renewed {renewals} times");
    client.close().await;
}
