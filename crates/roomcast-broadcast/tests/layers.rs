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
