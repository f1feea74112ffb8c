//! Several server nodes, one room (issue 4): nodes share one database (the
//! SQLite file of one data directory) and one Redis; every client, on any
//! node, receives every event exactly once and in `seq` order, an eviction
//! crosses nodes, and Redis dying mid-conversation loses nothing.
//!
//! The machine's Redis (`ROOMCAST_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`) is shared, so each test uses its own channel
//! prefix; the fault test starts a private `redis-server` and never stops
//! the shared one.

use std::path::Path;
use std::time::Duration;

use roomcast_app::FixtureRoom;
use roomcast_broadcast::testing::PrivateRedis;
use roomcast_domain::{RoomId, RoomSlug, Seq, UserId, Username};
use serde_json::{Value, json};

use crate::harness::{TestApp, Ws, spawn_node};

pub(crate) fn shared_redis_url() -> String {
    std::env::var("ROOMCAST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub(crate) fn unique_prefix() -> String {
    format!("roomcast-e2e:{}:", uuid::Uuid::new_v4().simple())
}

/// `count` nodes on one data directory and one Redis.
pub(crate) async fn fleet(dir: &Path, count: usize, redis_url: &str, prefix: &str) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(
            spawn_node(dir, |args| {
                args.redis_url = Some(redis_url.to_owned());
                args.redis_prefix = prefix.to_owned();
                // Posters here send faster than one user may by default.
                crate::harness::unlimited(args);
            })
            .await,
        );
    }
    nodes
}

pub(crate) async fn room_id(node: &TestApp, room: &FixtureRoom) -> RoomId {
    let host = Username::parse(room.host.clone()).expect("host");
    let slug = RoomSlug::parse(room.slug.clone()).expect("slug");
    node.server()
        .state()
        .storage()
        .room_by_address(&host, &slug)
        .await
        .expect("storage")
        .expect("room exists")
        .id
}

async fn last_seq(node: &TestApp, room: RoomId) -> Seq {
    node.server()
        .state()
        .storage()
        .last_seq(room)
        .await
        .expect("storage")
}

/// Reads frames until the event with `last` arrives, checking that seqs
/// go 1, 2, 3... with no gap and no repeat; returns the events.
async fn events_until(ws: &mut Ws, after: u64, last: u64) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut expected = after + 1;
    while expected <= last {
        let frame = ws.next_json().await;
        if frame["type"] != "chat_message" {
            continue; // ephemeral frames have no seq
        }
        assert_eq!(frame["seq"], expected, "seq order broken: {frame}");
        expected += 1;
        seen.push(frame);
    }
    seen
}

fn text(body: &str) -> Value {
    json!({"type": "text", "message": body, "timestamp": "2024-01-01T00:00:00Z"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_room_every_client_gets_every_event_once_in_order() {
    let temp = tempfile::tempdir().expect("temp dir");
    let nodes = fleet(temp.path(), 3, &shared_redis_url(), &unique_prefix()).await;
    let rooms = nodes[0].fixture(1, 3).await;
    let room = &rooms[0];
    // Every member on every node: 9 sockets, 3 per node.
    let mut sockets: Vec<(usize, usize, Ws)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for member in 0..3 {
            sockets.push((n, member, node.connect(room, member).await));
        }
    }
    // Member m posts from its socket on node m, all three at once.
    const PER_POSTER: usize = 10;
    for round in 0..PER_POSTER {
        for (n, member, ws) in sockets.iter_mut() {
            if *n == *member {
                ws.send_json(text(&format!("m{member} #{round}"))).await;
            }
        }
    }
    let total = (3 * PER_POSTER) as u64;
    let mut logs = Vec::new();
    for (_, _, ws) in sockets.iter_mut() {
        logs.push(events_until(ws, 0, total).await);
    }
    for log in &logs[1..] {
        assert_eq!(log, &logs[0], "every socket saw the same events");
    }
    for member in 0..3 {
        let mine = logs[0]
            .iter()
            .filter(|e| e["user"] == room.members[member].username)
            .count();
        assert_eq!(mine, PER_POSTER, "all of member {member}'s messages");
    }

    // An update on node 1 and a delete on node 2 of their own messages.
    let own = |member: usize| {
        logs[0]
            .iter()
            .find(|e| e["user"] == room.members[member].username)
            .map(|e| e["id"].clone())
            .expect("a message of the member")
    };
    let (edited, deleted) = (own(1), own(2));
    for (n, member, ws) in sockets.iter_mut() {
        if *n == 1 && *member == 1 {
            ws.send_json(json!({"type": "update", "messageId": edited, "message": "edited"}))
                .await;
        }
    }
    for (_, _, ws) in sockets.iter_mut() {
        let update = events_until(ws, total, total + 1).await;
        assert_eq!(update[0]["action"], "update");
        assert_eq!(update[0]["id"], edited);
        assert_eq!(update[0]["body"], "edited");
    }
    for (n, member, ws) in sockets.iter_mut() {
        if *n == 2 && *member == 2 {
            ws.send_json(json!({"type": "delete", "messageId": deleted}))
                .await;
        }
    }
    for (_, _, ws) in sockets.iter_mut() {
        let delete = events_until(ws, total + 1, total + 2).await;
        assert_eq!(
            delete[0],
            json!({"type": "chat_message", "action": "delete", "id": deleted, "seq": total + 2})
        );
    }
    // Nothing twice: after the last event, silence.
    for (_, _, ws) in sockets.iter_mut() {
        ws.quiet_for(Duration::from_millis(100)).await;
    }
    for mut node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_published_on_one_node_closes_the_users_sockets_on_the_others_with_1008() {
    let temp = tempfile::tempdir().expect("temp dir");
    let nodes = fleet(temp.path(), 3, &shared_redis_url(), &unique_prefix()).await;
    let rooms = nodes[0].fixture(1, 2).await;
    let room = &rooms[0];
    let mut evicted_on_1 = nodes[1].connect(room, 1).await;
    let mut evicted_on_2 = nodes[2].connect(room, 1).await;
    let mut stays_on_2 = nodes[2].connect(room, 0).await;
    let mut stays_on_0 = nodes[0].connect(room, 0).await;

    let user = UserId::parse(&room.members[1].user_id).expect("user id");
    let room_id = room_id(&nodes[0], room).await;
    nodes[0]
        .server()
        .state()
        .hub()
        .evict(room_id, user)
        .await
        .expect("eviction published");
    assert_eq!(evicted_on_1.closed().await, Some(1008));
    assert_eq!(evicted_on_2.closed().await, Some(1008));
    // The other member's sockets stay open and keep chatting across nodes.
    stays_on_0.send_json(text("still here")).await;
    for ws in [&mut stays_on_0, &mut stays_on_2] {
        let event = ws.next_json().await;
        assert_eq!(event["body"], "still here");
    }
    for mut node in nodes {
        node.shutdown().await;
    }
}

// ------------------------------------------------------------ faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_while_messages_flow_loses_nothing_and_duplicates_nothing() {
    let mut redis = PrivateRedis::start().await;
    let temp = tempfile::tempdir().expect("temp dir");
    let nodes = fleet(temp.path(), 2, &redis.url(), &unique_prefix()).await;
    let rooms = nodes[0].fixture(1, 3).await;
    let room = &rooms[0];
    // Posters only write (what they get back piles up and is read at the
    // end); watchers read as it comes. Every member is on both nodes.
    let mut poster_a = nodes[0].connect(room, 0).await;
    let mut poster_b = nodes[1].connect(room, 1).await;
    let mut watchers = [
        nodes[0].connect(room, 1).await,
        nodes[0].connect(room, 2).await,
        nodes[1].connect(room, 0).await,
        nodes[1].connect(room, 2).await,
    ];

    const ROUNDS: usize = 60;
    let mut seen = vec![0u64; watchers.len()];
    for round in 0..ROUNDS {
        if round == 20 {
            redis.kill().await;
            assert!(
                nodes[0]
                    .server()
                    .state()
                    .hub()
                    .layer()
                    .health()
                    .await
                    .is_err(),
                "readiness reports the layer down"
            );
        }
        if round == 35 {
            redis.restart().await;
        }
        poster_a.send_json(text(&format!("a{round}"))).await;
        poster_b.send_json(text(&format!("b{round}"))).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
        // Watchers keep up with whatever is contiguous so far.
        for (w, ws) in watchers.iter_mut().enumerate() {
            seen[w] += drain_in_order(ws, seen[w]).await;
        }
    }
    // Then the last events are posted while Redis is down, and none come
    // after them: only the resync after the reconnect can deliver them.
    redis.kill().await;
    for tail in 0..5 {
        poster_a.send_json(text(&format!("tail{tail}"))).await;
    }
    let room_id = room_id(&nodes[0], room).await;
    let expected = Seq::new(2 * ROUNDS as u64 + 5);
    while last_seq(&nodes[0], room_id).await < expected {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.restart().await;
    let last = last_seq(&nodes[0], room_id).await.get();
    assert_eq!(Seq::new(last), expected, "every post was stored");
    for (w, ws) in watchers.iter_mut().enumerate() {
        events_until(ws, seen[w], last).await;
    }
    for ws in [&mut poster_a, &mut poster_b] {
        events_until(ws, 0, last).await;
    }
    for ws in watchers.iter_mut().chain([&mut poster_a, &mut poster_b]) {
        ws.quiet_for(Duration::from_millis(100)).await;
    }
    for mut node in nodes {
        node.shutdown().await;
    }
}

/// Reads whatever frames are ready within a moment, checking they continue
/// the seq order after `after`; returns how many events it read.
async fn drain_in_order(ws: &mut Ws, after: u64) -> u64 {
    let mut next = after + 1;
    while let Some(frame) = ws.try_next_json(Duration::from_millis(1)).await {
        if frame["type"] != "chat_message" {
            continue;
        }
        assert_eq!(frame["seq"], next, "seq order broken: {frame}");
        next += 1;
    }
    next - after - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_retried_on_another_node_yields_one_stored_message() {
    let temp = tempfile::tempdir().expect("temp dir");
    let nodes = fleet(temp.path(), 2, &shared_redis_url(), &unique_prefix()).await;
    let rooms = nodes[0].fixture(1, 2).await;
    let room = &rooms[0];
    let mut watcher = nodes[1].connect(room, 1).await;
    let mut first = nodes[0].connect(room, 0).await;
    let mut with_id = text("sent once");
    with_id["clientId"] = json!("retry-across-nodes");
    first.send_json(with_id.clone()).await;
    let original = first.next_json().await;
    assert_eq!(original["clientId"], "retry-across-nodes");
    assert_eq!(watcher.next_json().await, original);
    // The sender lost its connection and retries through the other node.
    drop(first);
    let mut retry = nodes[1].connect(room, 0).await;
    retry.send_json(with_id).await;
    assert_eq!(
        retry.next_json().await,
        original,
        "the original event, not a new one"
    );
    assert_eq!(
        watcher.try_next_json(Duration::from_millis(300)).await,
        None,
        "nobody sees it twice"
    );
    assert_eq!(
        last_seq(&nodes[0], room_id(&nodes[0], room).await).await,
        1,
        "one stored message"
    );
}
