//! Presence (PROTOCOL.md section 3): the list on connect, `join` and `leave`
//! once per user whatever their tabs and nodes, a dead node's users leaving
//! by themselves, and the same list over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast_broadcast::presence::{PresenceChange, PresenceNotice};
use roomcast_broadcast::{Envelope, RedisConfig, RedisLayer, conformance::RecordingInbox};
use roomcast_domain::{UserId, Username};
use serde_json::{Value, json};

use crate::harness::{TestApp, Ws, spawn_app};
use crate::multinode::{fleet, room_id, shared_redis_url, unique_prefix};
use roomcast_app::FixtureRoom;

/// The default grace and TTL (`PresenceTiming`), with a margin for the
/// once-a-second presence tick and a loaded machine.
const AFTER_GRACE: Duration = Duration::from_millis(3500);
const TTL_AND_TICK: Duration = Duration::from_secs(13);

fn name(room: &FixtureRoom, member: usize) -> String {
    room.members[member].username.clone()
}

fn presence(users: &[String]) -> Value {
    let mut users = users.to_vec();
    users.sort();
    json!({"type": "chat_event", "action": "presence", "users": users})
}

fn join(user: &str) -> Value {
    json!({"type": "chat_event", "action": "join", "user": user})
}

fn leave(user: &str) -> Value {
    json!({"type": "chat_event", "action": "leave", "user": user})
}

async fn connect(app: &TestApp, room: &FixtureRoom, member: usize) -> Ws {
    app.connect(room, member).await.with_presence()
}

#[tokio::test]
async fn presence_on_connect_then_one_join_and_one_leave_per_user_with_two_tabs() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let room = &rooms[0];
    let (alice, bob) = (name(room, 0), name(room, 1));
    let mut alice_ws = connect(&app, room, 0).await;
    assert_eq!(
        alice_ws.next_json().await,
        presence(std::slice::from_ref(&alice))
    );

    let mut bob_tab1 = connect(&app, room, 1).await;
    assert_eq!(
        bob_tab1.next_json().await,
        presence(&[alice.clone(), bob.clone()])
    );
    assert_eq!(alice_ws.next_json().await, join(&bob));
    let mut bob_tab2 = connect(&app, room, 1).await;
    assert_eq!(
        bob_tab2.next_json().await,
        presence(&[alice.clone(), bob.clone()])
    );
    assert_eq!(bob_tab1.close_with(1000).await, (Some(1000), true));
    alice_ws.quiet_for(AFTER_GRACE).await;
    assert_eq!(bob_tab2.close_with(1000).await, (Some(1000), true));
    assert_eq!(alice_ws.next_json().await, leave(&bob));
    // Once: and a flapping reconnect (close, open again at once) is silent.
    let mut flap = connect(&app, room, 1).await;
    assert_eq!(alice_ws.next_json().await, join(&bob));
    flap.close_with(1000).await;
    let mut back = connect(&app, room, 1).await;
    assert_eq!(
        back.next_json().await,
        presence(&[alice.clone(), bob.clone()])
    );
    alice_ws.quiet_for(AFTER_GRACE).await;
    app.shutdown().await;
}

#[tokio::test]
async fn presence_comes_after_synced_on_a_resume_and_typing_is_not_echoed() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let room = &rooms[0];
    let mut bob = connect(&app, room, 1).await;
    assert_eq!(bob.next_json().await, presence(&[name(room, 1)]));
    let mut alice = app.connect_with(room, 0, Some(0)).await.with_presence();
    assert_eq!(alice.next_json().await["action"], "synced");
    assert_eq!(
        alice.next_json().await,
        presence(&[name(room, 0), name(room, 1)])
    );
    assert_eq!(bob.next_json().await, join(&name(room, 0)));
    alice.send_json(json!({"type": "typing"})).await;
    assert_eq!(
        bob.next_json().await,
        json!({"type": "chat_event", "action": "typing", "user": name(room, 0)})
    );
    alice.quiet_for(Duration::from_millis(300)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn presence_over_http_follows_the_room_endpoints_rules() {
    let mut app = spawn_app().await;
    let rooms = app.fixture(2, 1).await;
    let room = &rooms[0];
    let mut ws = connect(&app, room, 0).await;
    ws.next_json().await;
    let http = reqwest::Client::new();
    let get = |token: &str, host: &str, slug: &str| {
        http.get(format!(
            "http://{}/api/rooms/{host}/{slug}/presence",
            app.addr
        ))
        .bearer_auth(token.to_owned())
        .send()
    };
    let member = &room.members[0].token;
    let answer = get(member, &room.host, &room.slug).await.expect("request");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body, json!({"users": [name(room, 0)]}));
    let outsider = &rooms[1].members[0].token;
    let refused = get(outsider, &room.host, &room.slug)
        .await
        .expect("request");
    assert_eq!(refused.status(), 403);
    let missing = get(member, &room.host, "no-such-room")
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn three_nodes_share_presence_and_a_user_on_two_nodes_joins_and_leaves_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix();
    let mut nodes = fleet(dir.path(), 3, &shared_redis_url(), &prefix).await;
    let rooms = nodes[0].fixture(1, 3).await;
    let room = &rooms[0];
    let (alice, bob, carol) = (name(room, 0), name(room, 1), name(room, 2));
    let mut alice_ws = connect(&nodes[0], room, 0).await;
    assert_eq!(
        alice_ws.next_json().await,
        presence(std::slice::from_ref(&alice))
    );
    let mut bob_on_1 = connect(&nodes[1], room, 1).await;
    assert_eq!(
        bob_on_1.next_json().await,
        presence(&[alice.clone(), bob.clone()])
    );
    assert_eq!(alice_ws.next_json().await, join(&bob));
    let mut carol_ws = connect(&nodes[2], room, 2).await;
    let everyone = [alice.clone(), bob.clone(), carol.clone()];
    assert_eq!(carol_ws.next_json().await, presence(&everyone));
    assert_eq!(alice_ws.next_json().await, join(&carol));
    assert_eq!(bob_on_1.next_json().await, join(&carol));

    // Bob's second tab on another node: no join; closing the first: no leave.
    let mut bob_on_2 = connect(&nodes[2], room, 1).await;
    assert_eq!(bob_on_2.next_json().await, presence(&everyone));
    bob_on_1.close_with(1000).await;
    alice_ws.quiet_for(AFTER_GRACE).await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/api/rooms/{}/{}/presence",
        nodes[1].addr, room.host, room.slug
    );
    let listed: Value = http
        .get(&url)
        .bearer_auth(&room.members[0].token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed,
        json!({"users": everyone}),
        "node 1 serves nobody now"
    );
    bob_on_2.close_with(1000).await;
    assert_eq!(alice_ws.next_json().await, leave(&bob));
    assert_eq!(carol_ws.next_json().await, leave(&bob));
    alice_ws.quiet_for(Duration::from_millis(300)).await;
    for node in &mut nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn the_users_of_a_node_that_dies_without_a_goodbye_leave_within_the_ttl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix();
    let mut nodes = fleet(dir.path(), 2, &shared_redis_url(), &prefix).await;
    let rooms = nodes[0].fixture(1, 2).await;
    let room = &rooms[0];
    let mut alice = connect(&nodes[0], room, 0).await;
    alice.next_json().await;
    let mut bob = connect(&nodes[1], room, 1).await;
    bob.next_json().await;
    assert_eq!(alice.next_json().await, join(&name(room, 1)));

    // A third node, as the server's own layer would be, that announces a
    // user and stores its snapshot, then vanishes (no offline, no goodbye).
    let mut config = RedisConfig::new(shared_redis_url());
    config.channel_prefix = prefix.clone();
    let doomed = RedisLayer::connect(config, Arc::new(RecordingInbox::default()))
        .await
        .expect("redis");
    let id = room_id(&nodes[0], room).await;
    let ghost = (UserId::new(), Username::parse("ghost").expect("name"));
    let node = uuid::Uuid::new_v4();
    use roomcast_broadcast::ChannelLayer;
    let snapshot = PresenceNotice {
        node,
        change: PresenceChange::Snapshot {
            users: vec![ghost.clone()],
        },
    };
    doomed
        .put_state(
            id,
            roomcast_broadcast::wire::encode_presence(&snapshot),
            Duration::from_secs(10),
        )
        .await
        .expect("put");
    let online = PresenceNotice {
        node,
        change: PresenceChange::Online {
            user: ghost.0,
            name: ghost.1.clone(),
        },
    };
    doomed
        .publish(id, Envelope::Presence(online))
        .await
        .expect("publish");
    assert_eq!(alice.next_json().await, join("ghost"));
    assert_eq!(bob.next_json().await, join("ghost"));
    let died = Instant::now();
    drop(doomed);
    assert_eq!(
        alice.try_next_json(TTL_AND_TICK).await,
        Some(leave("ghost")),
        "a leave within the TTL"
    );
    assert_eq!(bob.next_json().await, leave("ghost"));
    assert!(died.elapsed() < TTL_AND_TICK);
    for node in &mut nodes {
        node.shutdown().await;
    }
}
