//! Three nodes on a private Redis Cluster (issue 16): rooms spread over
//! every shard, and every client on every node gets every event once and
//! in `seq` order, even across a primary killed mid-flow (its replica takes
//! over; what was published meanwhile comes back from storage).

use roomcast_app::FixtureRoom;
use roomcast_broadcast::testing::{PrivateCluster, redis_cli};
use serde_json::Value;

use crate::harness::Ws;
use crate::multinode::{fleet, room_id, unique_prefix};

/// Reads until the event with `last`, checking seqs `after + 1..=last`
/// arrive in order, none missing, none twice.
async fn in_order(ws: &mut Ws, after: u64, last: u64) {
    let mut expected = after + 1;
    while expected <= last {
        let frame: Value = ws.next_json().await;
        if frame["type"] != "chat_message" {
            continue;
        }
        assert_eq!(frame["seq"], expected, "seq order broken: {frame}");
        expected += 1;
    }
}

fn text(body: &str) -> Value {
    serde_json::json!({"type": "text", "message": body, "timestamp": "2024-01-01T00:00:00Z"})
}

const BURST: u64 = 5;

type Sockets = Vec<(usize, usize, usize, Ws)>;

/// Each member posts `BURST` messages in each room from its node.
async fn burst(sockets: &mut Sockets, tag: &str) {
    for i in 0..BURST {
        for (_, n, member, ws) in sockets.iter_mut() {
            if n == member {
                ws.send_json(text(&format!("{tag} m{member} #{i}"))).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_rooms_on_every_shard_survive_a_failover() {
    let mut cluster = PrivateCluster::start().await;
    let temp = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix();
    let nodes = fleet(temp.path(), 3, &cluster.url(), &prefix).await;
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3);

    // One room per shard (the channel's slot, asked of the cluster). The
    // fixture's rooms are random: 24 leave a shard empty once in 5,000.
    let mut chosen: Vec<Option<FixtureRoom>> = vec![None, None, None];
    for room in nodes[0].fixture(24, 3).await {
        let id = room_id(&nodes[0], &room).await;
        let channel = format!("{prefix}room:{id}");
        let slot: u16 = redis_cli(cluster.live_port(), &["CLUSTER", "KEYSLOT", &channel])
            .await
            .trim()
            .parse()
            .expect("a slot");
        let shard = primaries.iter().position(|p| p.owns(slot)).expect("owned");
        chosen[shard].get_or_insert(room);
    }
    assert!(chosen.iter().all(Option::is_some), "a room on every shard");
    let rooms: Vec<FixtureRoom> = chosen.into_iter().flatten().collect();

    // Every member of every room on every node; member m posts on node m.
    let mut sockets: Sockets = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for (n, node) in nodes.iter().enumerate() {
            for member in 0..3 {
                sockets.push((r, n, member, node.connect(room, member).await));
            }
        }
    }
    burst(&mut sockets, "before").await;
    let per_room = 3 * BURST;
    for (_, _, _, ws) in sockets.iter_mut() {
        in_order(ws, 0, per_room).await;
    }

    // A primary dies; the posts go on at once, during the failover.
    cluster.kill(primaries[1].port).await;
    burst(&mut sockets, "during").await;
    for (_, _, _, ws) in sockets.iter_mut() {
        in_order(ws, per_room, 2 * per_room).await;
    }
    cluster.wait_ok().await;
    burst(&mut sockets, "after").await;
    for (_, _, _, ws) in sockets.iter_mut() {
        in_order(ws, 2 * per_room, 3 * per_room).await;
        ws.quiet_for(std::time::Duration::from_millis(100)).await;
    }
    for mut node in nodes {
        node.shutdown().await;
    }
}
