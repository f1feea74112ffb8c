//! Every channel layer passes the conformance suite; the Redis layer also
//! survives Redis going away and coming back.
//!
//! The Redis checks use the machine's Redis (`ROOMCAST_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`) with a channel prefix unique per test,
//! so tests never hear each other; the fault checks start a private
//! `redis-server` on a free port and never touch the shared one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_broadcast::conformance::{LayerFactory, RecordingInbox};
use roomcast_broadcast::testing::PrivateRedis;
use roomcast_broadcast::{ChannelLayer, Envelope, InMemoryBus, Inbox, RedisConfig, RedisLayer};
use roomcast_domain::{RoomId, Seq};
use tokio::sync::mpsc;

mod memory {
    use super::*;

    #[derive(Default)]
    struct Factory(InMemoryBus);

    #[async_trait]
    impl LayerFactory for Factory {
        async fn node(&self, inbox: Arc<RecordingInbox>) -> Arc<dyn ChannelLayer> {
            Arc::new(self.0.node(inbox))
        }
    }

    async fn fresh() -> (Factory, ()) {
        (Factory::default(), ())
    }

    roomcast_broadcast::layer_conformance_tests!(fresh());
}

fn shared_redis_url() -> String {
    std::env::var("ROOMCAST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    format!("roomcast-test:{}:", uuid::Uuid::new_v4().simple())
}

mod redis {
    use super::*;

    /// Nodes on the shared Redis, under one prefix per test.
    struct Factory {
        prefix: String,
    }

    #[async_trait]
    impl LayerFactory for Factory {
        async fn node(&self, inbox: Arc<RecordingInbox>) -> Arc<dyn ChannelLayer> {
            let mut config = RedisConfig::new(shared_redis_url());
            config.channel_prefix = self.prefix.clone();
            Arc::new(
                RedisLayer::connect(config, inbox)
                    .await
                    .expect("the machine's Redis is reachable"),
            )
        }
    }

    async fn fresh() -> (Factory, ()) {
        (
            Factory {
                prefix: unique_prefix(),
            },
            (),
        )
    }

    roomcast_broadcast::layer_conformance_tests!(fresh());
}

// ------------------------------------------------------------ faults

/// Records deliveries and resyncs, in the order they happen.
#[derive(Debug)]
enum Seen {
    Delivered(RoomId, Envelope),
    Resync(RoomId),
}

struct Recorder(mpsc::UnboundedSender<Seen>);

impl Inbox for Recorder {
    fn deliver(&self, room: RoomId, envelope: Envelope) {
        let _ = self.0.send(Seen::Delivered(room, envelope));
    }
    fn resync(&self, room: RoomId) {
        let _ = self.0.send(Seen::Resync(room));
    }
}

async fn node(
    url: String,
    prefix: &str,
    wait: bool,
) -> (RedisLayer, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut config = RedisConfig::new(url);
    config.channel_prefix = prefix.to_owned();
    config.wait = wait;
    let layer = RedisLayer::connect(config, Arc::new(Recorder(tx)))
        .await
        .expect("connects");
    (layer, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("something within 10 s")
        .expect("inbox open")
}

/// Skips resyncs until the event with `seq` arrives.
async fn delivered(rx: &mut mpsc::UnboundedReceiver<Seen>, room: RoomId, seq: u64) {
    loop {
        match next(rx).await {
            Seen::Delivered(r, env) if r == room && env.seq() == Some(Seq::new(seq)) => return,
            Seen::Resync(_) => continue,
            other => panic!("expected event {seq}, got {other:?}"),
        }
    }
}

fn event(seq: u64) -> Envelope {
    Envelope::Event {
        seq: Seq::new(seq),
        frame: Bytes::from(format!("{{\"seq\":{seq}}}")),
    }
}

async fn eventually_healthy(layer: &RedisLayer) {
    for _ in 0..400 {
        if layer.health().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("layer still unhealthy after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_comes_back_every_live_room_is_resubscribed_and_resynced() {
    let mut redis = PrivateRedis::start_on(PrivateRedis::free_port()).await;
    let prefix = unique_prefix();
    let (a, _a_rx) = node(redis.url(), &prefix, false).await;
    let (b, mut b_rx) = node(redis.url(), &prefix, false).await;
    let (room, quiet_room) = (RoomId::new(), RoomId::new());
    b.subscribe(room).await.expect("subscribe");
    b.subscribe(quiet_room).await.expect("subscribe");
    a.publish(room, event(1)).await.expect("publish");
    delivered(&mut b_rx, room, 1).await;

    redis.kill().await;
    assert!(
        a.publish(room, event(2)).await.is_err(),
        "a publish while Redis is down fails, fast"
    );
    assert!(a.health().await.is_err());
    // A room joined while Redis is down is served locally, and subscribed
    // once it is back.
    let late_room = RoomId::new();
    b.subscribe(late_room).await.expect("subscribe while down");

    redis.restart().await;
    eventually_healthy(&a).await;
    eventually_healthy(&b).await;
    let mut resynced = std::collections::HashSet::new();
    while resynced.len() < 3 {
        match next(&mut b_rx).await {
            Seen::Resync(r) => {
                resynced.insert(r);
            }
            other => panic!("expected resyncs, got {other:?}"),
        }
    }
    assert_eq!(
        resynced,
        [room, quiet_room, late_room].into_iter().collect(),
        "every live room resyncs, even one with no newer event"
    );
    a.publish(room, event(3)).await.expect("publish");
    a.publish(late_room, event(1)).await.expect("publish");
    delivered(&mut b_rx, room, 3).await;
    delivered(&mut b_rx, late_room, 1).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_lost_publications_tells_the_others_to_resync() {
    let redis = PrivateRedis::start_on(PrivateRedis::free_port()).await;
    let prefix = unique_prefix();
    let (a, _a_rx) = node(redis.url(), &prefix, false).await;
    let (b, mut b_rx) = node(redis.url(), &prefix, false).await;
    let room = RoomId::new();
    b.subscribe(room).await.expect("subscribe");
    // Only the publisher connections drop: b's subscriber never notices,
    // so only a's notice can tell b that it missed something.
    let mut lost = None;
    for seq in 1..=50 {
        kill_publishers(redis.port()).await;
        if a.publish(room, event(seq)).await.is_err() {
            lost = Some(seq);
            break;
        }
        delivered(&mut b_rx, room, seq).await;
    }
    let lost = lost.expect("a publish failed while its connection was killed");
    eventually_healthy(&a).await;
    match next(&mut b_rx).await {
        Seen::Resync(r) => assert_eq!(r, room),
        other => panic!("expected a resync after losing {lost}, got {other:?}"),
    }
    a.close().await;
    b.close().await;
}

/// Kills the private Redis's connections that are not subscribed to
/// anything (the nodes' publishers), leaving the subscribers up.
async fn kill_publishers(port: u16) -> usize {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (read, mut write) = tcp.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"CLIENT LIST\r\n")
        .await
        .expect("client list");
    let mut header = String::new();
    read.read_line(&mut header).await.expect("bulk header");
    let len: usize = header
        .trim_start_matches('$')
        .trim()
        .parse()
        .expect("bulk length");
    let mut body = vec![0u8; len + 2];
    tokio::io::AsyncReadExt::read_exact(&mut read, &mut body)
        .await
        .expect("client list body");
    let list = String::from_utf8_lossy(&body).into_owned();
    let mut ids = Vec::new();
    for line in list.lines() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let subscribed = field("sub").is_some_and(|n| n != "0");
        let is_us = field("cmd").is_some_and(|c| c.starts_with("client"));
        if !subscribed
            && !is_us
            && let Some(id) = field("id")
        {
            ids.push(id);
        }
    }
    for id in &ids {
        write
            .write_all(format!("CLIENT KILL ID {id}\r\n").as_bytes())
            .await
            .expect("client kill");
        let mut answer = String::new();
        read.read_line(&mut answer).await.expect("kill answer");
    }
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_an_unreachable_redis_fails_at_once_and_with_wait_it_connects_later() {
    let port = PrivateRedis::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let (tx, _rx) = mpsc::unbounded_channel();
    let started = std::time::Instant::now();
    let refused = RedisLayer::connect(RedisConfig::new(url.clone()), Arc::new(Recorder(tx))).await;
    assert!(refused.is_err(), "no Redis, no wait: an error");
    assert!(started.elapsed() < Duration::from_secs(5));

    let prefix = unique_prefix();
    let (waiting, mut waiting_rx) = node(url.clone(), &prefix, true).await;
    assert!(waiting.health().await.is_err(), "not ready before Redis");
    let room = RoomId::new();
    waiting.subscribe(room).await.expect("joins while waiting");

    let _redis = PrivateRedis::start_on(port).await;
    eventually_healthy(&waiting).await;
    let (other, _other_rx) = node(url, &prefix, false).await;
    // The room is subscribed once Redis is up (after its resync).
    match next(&mut waiting_rx).await {
        Seen::Resync(r) => assert_eq!(r, room),
        other => panic!("expected a resync, got {other:?}"),
    }
    other.publish(room, event(1)).await.expect("publish");
    delivered(&mut waiting_rx, room, 1).await;
    waiting.close().await;
    other.close().await;
}

#[tokio::test]
async fn urls_that_are_not_redis_are_refused() {
    for url in ["http://127.0.0.1:6379", "", "rediss://127.0.0.1:6379"] {
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(
            RedisLayer::connect(RedisConfig::new(url), Arc::new(Recorder(tx)))
                .await
                .is_err(),
            "{url}"
        );
    }
}

// ------------------------------------------------------- Redis Cluster

mod redis_cluster {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use roomcast_broadcast::testing::{Primary, PrivateCluster, redis_cli as cli, until};

    /// Nodes on one private cluster, under one prefix per check.
    struct Factory {
        url: String,
        prefix: String,
    }

    #[async_trait]
    impl LayerFactory for Factory {
        async fn node(&self, inbox: Arc<RecordingInbox>) -> Arc<dyn ChannelLayer> {
            let mut config = RedisConfig::new(self.url.clone());
            config.channel_prefix = self.prefix.clone();
            Arc::new(
                RedisLayer::connect(config, inbox)
                    .await
                    .expect("the private cluster is reachable"),
            )
        }
    }

    async fn cluster() -> (Factory, PrivateCluster) {
        let cluster = PrivateCluster::start().await;
        (
            Factory {
                url: cluster.url(),
                prefix: unique_prefix(),
            },
            cluster,
        )
    }

    roomcast_broadcast::layer_conformance_tests!(sequential cluster());

    /// The hash slot of a room's channel under `prefix`.
    fn slot_of(prefix: &str, room: RoomId) -> u16 {
        fred::util::redis_keyslot(format!("{prefix}room:{room}").as_bytes())
    }

    /// `per_shard` rooms on each primary.
    fn rooms_on_every_shard(prefix: &str, primaries: &[Primary], per_shard: usize) -> Vec<RoomId> {
        let mut counts = vec![0; primaries.len()];
        let mut rooms = Vec::new();
        while counts.iter().any(|c| *c < per_shard) {
            let room = RoomId::new();
            let slot = slot_of(prefix, room);
            let at = primaries
                .iter()
                .position(|p| p.owns(slot))
                .expect("every slot has a primary");
            if counts[at] < per_shard {
                counts[at] += 1;
                rooms.push(room);
            }
        }
        rooms
    }

    /// A subscriber node standing in for a hub over storage: it accepts a
    /// room's events in `seq` order, fills a gap (or answers a resync)
    /// from `stored` like the hub's backfill, and counts what the layer
    /// delivered twice.
    #[derive(Default)]
    struct Audit {
        stored: Arc<Mutex<HashMap<RoomId, u64>>>,
        accepted: Mutex<HashMap<RoomId, Vec<u64>>>,
        doubled: Mutex<u64>,
        backfilled: Mutex<u64>,
    }

    impl Audit {
        fn catch_up(&self, room: RoomId, upto: u64) {
            let mut accepted = self.accepted.lock().expect("lock");
            let seqs = accepted.entry(room).or_default();
            let last = seqs.last().copied().unwrap_or(0);
            for seq in last + 1..=upto {
                seqs.push(seq);
                *self.backfilled.lock().expect("lock") += 1;
            }
        }

        /// Every room has events 1 to `upto` (at least), in order.
        fn reached(&self, rooms: &[RoomId], upto: u64) -> bool {
            let accepted = self.accepted.lock().expect("lock");
            rooms.iter().all(|r| {
                accepted.get(r).is_some_and(|s| {
                    s.len() >= upto as usize && s.iter().copied().take(upto as usize).eq(1..=upto)
                })
            })
        }

        fn complete(&self, rooms: &[RoomId], upto: u64) -> bool {
            let accepted = self.accepted.lock().expect("lock");
            rooms.iter().all(|r| {
                accepted
                    .get(r)
                    .is_some_and(|s| s.iter().copied().eq(1..=upto))
            })
        }
    }

    impl Inbox for Audit {
        fn deliver(&self, room: RoomId, envelope: Envelope) {
            let Some(seq) = envelope.seq() else { return };
            let seq = seq.get();
            let mut accepted = self.accepted.lock().expect("lock");
            let seqs = accepted.entry(room).or_default();
            let last = seqs.last().copied().unwrap_or(0);
            if seq <= last {
                *self.doubled.lock().expect("lock") += 1;
                return;
            }
            drop(accepted);
            // A gap: what is missing was stored before `seq` was published.
            self.catch_up(room, seq - 1);
            self.accepted
                .lock()
                .expect("lock")
                .entry(room)
                .or_default()
                .push(seq);
        }

        fn resync(&self, room: RoomId) {
            let stored = self.stored.lock().expect("lock").get(&room).copied();
            self.catch_up(room, stored.unwrap_or(0));
        }
    }

    async fn cluster_node(url: &str, prefix: &str, inbox: Arc<dyn Inbox>) -> RedisLayer {
        let mut config = RedisConfig::new(url);
        config.channel_prefix = prefix.to_owned();
        config.topology_interval = Duration::from_millis(200);
        RedisLayer::connect(config, inbox)
            .await
            .expect("connects to the cluster")
    }

    /// Subscriber connections (with shard subscriptions) on `port`.
    async fn shard_subscribers(port: u16) -> usize {
        cli(port, &["CLIENT", "LIST"])
            .await
            .lines()
            .filter(|l| {
                l.split(' ')
                    .find_map(|kv| kv.strip_prefix("ssub="))
                    .is_some_and(|n| n != "0")
            })
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rooms_spread_over_every_shard_and_every_subscriber_gets_every_event_once_in_order() {
        let cluster = PrivateCluster::start().await;
        let prefix = unique_prefix();
        let primaries = cluster.primaries().await;
        assert_eq!(primaries.len(), 3);
        let rooms = rooms_on_every_shard(&prefix, &primaries, 3);
        let publisher = cluster_node(&cluster.url(), &prefix, Arc::new(Audit::default())).await;
        let audits: Vec<Arc<Audit>> = (0..2).map(|_| Arc::new(Audit::default())).collect();
        let mut subscribers = Vec::new();
        for audit in &audits {
            let node = cluster_node(&cluster.url(), &prefix, audit.clone()).await;
            for room in &rooms {
                node.subscribe(*room).await.expect("subscribe");
            }
            subscribers.push(node);
        }
        // Each shard carries the rooms it owns: both subscribers hold a
        // shard subscription on every primary.
        for primary in &primaries {
            assert_eq!(shard_subscribers(primary.port).await, 2, "{primary:?}");
        }
        const EVENTS: u64 = 100;
        for seq in 1..=EVENTS {
            for room in &rooms {
                publisher.publish(*room, event(seq)).await.expect("publish");
            }
        }
        for audit in &audits {
            until("every event to arrive", || async {
                audit.complete(&rooms, EVENTS)
            })
            .await;
            assert_eq!(*audit.doubled.lock().expect("lock"), 0, "nothing doubled");
            assert_eq!(
                *audit.backfilled.lock().expect("lock"),
                0,
                "no gap: each event arrived, in order"
            );
        }
        publisher.close().await;
        for node in subscribers {
            node.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slot_moved_and_a_primary_killed_mid_flow_lose_and_double_nothing() {
        let mut cluster = PrivateCluster::start().await;
        let prefix = unique_prefix();
        let primaries = cluster.primaries().await;
        let rooms = rooms_on_every_shard(&prefix, &primaries, 2);
        let stored = Arc::new(Mutex::new(HashMap::new()));
        let publisher =
            Arc::new(cluster_node(&cluster.url(), &prefix, Arc::new(Audit::default())).await);
        let mut audits = Vec::new();
        let mut subscribers = Vec::new();
        for _ in 0..2 {
            let audit = Arc::new(Audit {
                stored: stored.clone(),
                ..Audit::default()
            });
            let node = cluster_node(&cluster.url(), &prefix, audit.clone()).await;
            for room in &rooms {
                node.subscribe(*room).await.expect("subscribe");
            }
            audits.push(audit);
            subscribers.push(node);
        }

        // The flow: every room gets event after event, each stored before
        // it is published (as the server does), failures tolerated.
        let flowing = tokio_util::sync::CancellationToken::new();
        let flow = {
            let (publisher, stored, rooms, flowing) = (
                publisher.clone(),
                stored.clone(),
                rooms.clone(),
                flowing.clone(),
            );
            tokio::spawn(async move {
                let mut seq = 0;
                while !flowing.is_cancelled() {
                    seq += 1;
                    for room in &rooms {
                        stored.lock().expect("lock").insert(*room, seq);
                        let _ = publisher.publish(*room, event(seq)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seq
            })
        };
        let flowed = |at_least: u64| {
            let stored = stored.clone();
            let room = rooms[0];
            move || {
                let stored = stored.clone();
                async move {
                    stored
                        .lock()
                        .expect("lock")
                        .get(&room)
                        .copied()
                        .unwrap_or(0)
                        >= at_least
                }
            }
        };
        until("the flow to start", flowed(20)).await;

        // 1. A room's slot moves from its primary to another.
        let moved_room = rooms[0];
        let slot = slot_of(&prefix, moved_room);
        let from = primaries
            .iter()
            .find(|p| p.owns(slot))
            .expect("owner")
            .clone();
        let to = primaries
            .iter()
            .find(|p| p.id != from.id)
            .expect("other")
            .clone();
        cluster.move_slot(slot, &from, &to).await;
        // The moved room's events go on reaching every subscriber (no
        // failover yet to make them resubscribe everything).
        let mark = stored
            .lock()
            .expect("lock")
            .get(&moved_room)
            .copied()
            .unwrap_or(0)
            + 20;
        until("the flow to go on", flowed(mark)).await;
        for audit in &audits {
            until("events published after the move to arrive", || async {
                audit.reached(&rooms, mark)
            })
            .await;
        }

        // 2. A primary dies; its replica takes over.
        let victim = cluster
            .primaries()
            .await
            .into_iter()
            .find(|p| p.id != to.id)
            .expect("a primary");
        cluster.kill(victim.port).await;
        until("a replica to take the dead primary's slots", || async {
            let now = cluster.primaries().await;
            now.len() == 3 && now.iter().all(|p| p.port != victim.port)
        })
        .await;
        cluster.wait_ok().await;
        let after = stored
            .lock()
            .expect("lock")
            .get(&rooms[0])
            .copied()
            .unwrap_or(0);
        until("the flow to go on", flowed(after + 40)).await;

        flowing.cancel();
        let last = flow.await.expect("the flow ends");
        for audit in &audits {
            until(
                "every event, once, in order (resynced where lost)",
                || async { audit.complete(&rooms, last) },
            )
            .await;
            eprintln!(
                "{} events per room; {} delivered twice by the layer, {} filled from storage",
                last,
                audit.doubled.lock().expect("lock"),
                audit.backfilled.lock().expect("lock"),
            );
        }
        publisher.close().await;
        for node in subscribers {
            node.close().await;
        }
    }
}
