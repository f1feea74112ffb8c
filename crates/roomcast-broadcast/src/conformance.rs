//! The channel-layer conformance suite: every layer must pass every check.
//!
//! A layer's test module implements [`LayerFactory`] (how to make one more
//! node on a shared bus) and calls
//! [`layer_conformance_tests!`](crate::layer_conformance_tests) with an
//! async expression returning `(factory, guard)`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_domain::{RoomId, Seq, UserId, Username};
use tokio::sync::{Mutex, mpsc};

use crate::presence::{PresenceChange, PresenceNotice};
use crate::{ChannelLayer, Envelope, Inbox};

/// Makes nodes that share one bus (one Redis, one in-memory bus).
#[async_trait]
pub trait LayerFactory: Send + Sync {
    async fn node(&self, inbox: Arc<RecordingInbox>) -> Arc<dyn ChannelLayer>;
}

/// Generates one test per conformance check for a layer factory.
#[macro_export]
macro_rules! layer_conformance_tests {
    // One test per check, each with its own `(factory, guard)`.
    ($factory:expr) => {
        $crate::layer_conformance_tests!(@list each $factory);
    };
    // One test running every check in turn on one `(factory, guard)`: for
    // a layer whose setup is costly (a private Redis Cluster).
    (sequential $factory:expr) => {
        $crate::layer_conformance_tests!(@list sequential $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::layer_conformance_tests!(@$mode $factory;
            publications_reach_other_nodes_but_not_the_publisher,
            rooms_are_isolated,
            order_is_kept_per_publisher,
            unsubscribed_nodes_receive_nothing,
            every_kind_of_envelope_arrives_intact,
            room_state_is_shared_per_node_and_expires,
            health_is_reported,
        );
    };
    (@sequential $factory:expr; $($check:ident),* $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_conformance_check() {
            let (factory, _guard) = $factory.await;
            $(
                $crate::conformance::$check(&factory).await;
            )*
        }
    };
    (@each $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (factory, _guard) = $factory.await;
                $crate::conformance::$check(&factory).await;
            }
        )*
    };
}

/// An inbox that records what it gets, for tests.
#[derive(Debug)]
pub struct RecordingInbox {
    tx: mpsc::UnboundedSender<(RoomId, Envelope)>,
    rx: Mutex<mpsc::UnboundedReceiver<(RoomId, Envelope)>>,
}

impl Default for RecordingInbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

impl RecordingInbox {
    /// The next delivery, or panics after a few seconds.
    pub async fn next(&self) -> (RoomId, Envelope) {
        let mut rx = self.rx.lock().await;
        match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
            Ok(Some(d)) => d,
            Ok(None) => panic!("inbox closed"),
            Err(_) => panic!("nothing delivered within 15 s"),
        }
    }

    /// Asserts nothing is waiting right now.
    pub async fn assert_empty(&self) {
        let mut rx = self.rx.lock().await;
        if let Ok(d) = rx.try_recv() {
            panic!("unexpected delivery {d:?}");
        }
    }
}

impl Inbox for RecordingInbox {
    fn deliver(&self, room: RoomId, envelope: Envelope) {
        let _ = self.tx.send((room, envelope));
    }
}

fn event(seq: u64, text: &str) -> Envelope {
    Envelope::Event {
        seq: Seq::new(seq),
        frame: Bytes::from(text.to_owned()),
    }
}

async fn node(factory: &impl LayerFactory) -> (Arc<dyn ChannelLayer>, Arc<RecordingInbox>) {
    let inbox = Arc::new(RecordingInbox::default());
    (factory.node(inbox.clone()).await, inbox)
}

pub async fn publications_reach_other_nodes_but_not_the_publisher(factory: &impl LayerFactory) {
    let room = RoomId::new();
    let (a, a_in) = node(factory).await;
    let (b, b_in) = node(factory).await;
    let (c, c_in) = node(factory).await;
    for layer in [&a, &b, &c] {
        layer.subscribe(room).await.expect("subscribe");
    }
    a.publish(room, event(1, "from a")).await.expect("publish");
    assert_eq!(b_in.next().await, (room, event(1, "from a")));
    assert_eq!(c_in.next().await, (room, event(1, "from a")));
    // A marker from b proves a's inbox would have had the first one by now.
    b.publish(room, event(2, "from b")).await.expect("publish");
    assert_eq!(a_in.next().await, (room, event(2, "from b")));
    assert_eq!(c_in.next().await, (room, event(2, "from b")));
    a_in.assert_empty().await;
    b_in.assert_empty().await;
}

pub async fn rooms_are_isolated(factory: &impl LayerFactory) {
    let (one, two) = (RoomId::new(), RoomId::new());
    let (a, _a_in) = node(factory).await;
    let (b, b_in) = node(factory).await;
    b.subscribe(two).await.expect("subscribe");
    a.publish(one, event(1, "one")).await.expect("publish");
    a.publish(two, event(1, "two")).await.expect("publish");
    assert_eq!(b_in.next().await, (two, event(1, "two")));
    b_in.assert_empty().await;
}

pub async fn order_is_kept_per_publisher(factory: &impl LayerFactory) {
    let room = RoomId::new();
    let (a, _a_in) = node(factory).await;
    let (b, b_in) = node(factory).await;
    b.subscribe(room).await.expect("subscribe");
    for seq in 1..=200 {
        a.publish(room, event(seq, &format!("m{seq}")))
            .await
            .expect("publish");
    }
    for seq in 1..=200 {
        assert_eq!(b_in.next().await, (room, event(seq, &format!("m{seq}"))));
    }
}

pub async fn unsubscribed_nodes_receive_nothing(factory: &impl LayerFactory) {
    let (left, still) = (RoomId::new(), RoomId::new());
    let (a, _a_in) = node(factory).await;
    let (b, b_in) = node(factory).await;
    b.subscribe(left).await.expect("subscribe");
    b.subscribe(still).await.expect("subscribe");
    b.unsubscribe(left).await.expect("unsubscribe");
    a.publish(left, event(1, "gone")).await.expect("publish");
    a.publish(still, event(1, "marker")).await.expect("publish");
    assert_eq!(b_in.next().await, (still, event(1, "marker")));
    b_in.assert_empty().await;
}

pub async fn every_kind_of_envelope_arrives_intact(factory: &impl LayerFactory) {
    let room = RoomId::new();
    let (a, _a_in) = node(factory).await;
    let (b, b_in) = node(factory).await;
    b.subscribe(room).await.expect("subscribe");
    let user = UserId::new();
    let sent = [
        event(u64::MAX, "{\"type\":\"chat_message\",\"body\":\"é 😀\"}"),
        Envelope::Ephemeral {
            frame: Bytes::from_static(b"{\"type\":\"chat_event\"}"),
            from: None,
        },
        Envelope::Ephemeral {
            frame: Bytes::from_static(b"{\"action\":\"typing\"}"),
            from: Some(user),
        },
        Envelope::Presence(PresenceNotice {
            node: uuid::Uuid::new_v4(),
            change: PresenceChange::Snapshot {
                users: vec![(user, Username::parse("alice").expect("name"))],
            },
        }),
        Envelope::Evict { user },
        event(7, ""),
    ];
    for env in &sent {
        a.publish(room, env.clone()).await.expect("publish");
    }
    for env in sent {
        assert_eq!(b_in.next().await, (room, env));
    }
}

pub async fn room_state_is_shared_per_node_and_expires(factory: &impl LayerFactory) {
    let (room, other) = (RoomId::new(), RoomId::new());
    let (a, _a_in) = node(factory).await;
    let (b, _b_in) = node(factory).await;
    let long = Duration::from_secs(60);
    assert!(a.states(room).await.expect("states").is_empty());
    a.put_state(room, Bytes::from_static(b"a1"), long)
        .await
        .expect("put");
    a.put_state(room, Bytes::from_static(b"a2"), long)
        .await
        .expect("put replaces");
    b.put_state(room, Bytes::from_static(b"b"), Duration::from_millis(300))
        .await
        .expect("put");
    let mut seen = b.states(room).await.expect("states");
    seen.sort();
    assert_eq!(seen, [Bytes::from_static(b"a2"), Bytes::from_static(b"b")]);
    assert!(
        a.states(other).await.expect("states").is_empty(),
        "per room"
    );
    // b stops refreshing (a node that died): its entry goes by itself.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        a.states(room).await.expect("states"),
        [Bytes::from_static(b"a2")]
    );
    a.clear_state(room).await.expect("clear");
    assert!(b.states(room).await.expect("states").is_empty());
}

pub async fn health_is_reported(factory: &impl LayerFactory) {
    let (a, _a_in) = node(factory).await;
    a.health().await.expect("a fresh layer is healthy");
    assert!(!a.name().is_empty());
}
