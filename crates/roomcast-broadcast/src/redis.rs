//! The Redis channel layer: the nodes of a fleet meet on Redis pub/sub.
//!
//! Per node, not per socket: one connection publishes, one subscribes.
//! A node subscribes to a room's channel when its first local socket joins
//! and unsubscribes when its last one leaves (the [`crate::Hub`] calls
//! [`ChannelLayer::subscribe`] that way), and publishes each event once,
//! whatever the number of members.
//!
//! Redis pub/sub is at-most-once: whatever is published while a connection
//! is down is gone. Nothing is lost for good, because every event is stored
//! before it is published, so this layer's job is to notice losses and tell
//! the hub to catch up from storage ([`Inbox::resync`]):
//! - after the subscriber (re)connects, it subscribes every live room again
//!   and then resyncs each one (what was published before the SUBSCRIBE
//!   took effect was committed before it, so storage has it);
//! - if the receive buffer overflows, every live room resyncs;
//! - a publish that fails marks its room; once the publisher is back, it
//!   sends a `stale` control message for the room, so the other nodes
//!   resync even if their own connections never dropped, and it publishes
//!   failed evictions again (an eviction is not stored anywhere else).
//!
//! Publishes and (un)subscribes fail fast while the connection is down
//! instead of queueing: the hub has already served local sockets, and the
//! repair above covers the other nodes. The sender is never held up.
//!
//! Payloads are [`crate::wire`] v1, tagged with this node's id; a node
//! drops its own publications (Redis echoes them to its subscriber).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, Options, PubsubInterface, ReconnectPolicy,
    ServerConfig,
};
use fred::types::{ClusterHash, CustomCommand, Message, Value};
use roomcast_domain::{RoomId, UserId};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Connections;
use crate::redis_cluster::{self, Shards};
use crate::wire::{self, NodeId, WireMessage};
use crate::{BroadcastError, ChannelLayer, Envelope, Inbox};

/// How a node talks to Redis. Every knob is explicit: fred's defaults
/// (no command timeout, an unbounded command queue, a 32-message receive
/// buffer) suit a cache, not a fan-out path.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`.
    pub url: String,
    /// Prepended to every channel name, so fleets (or tests) sharing one
    /// Redis never hear each other.
    pub channel_prefix: String,
    /// Start even if Redis is unreachable now, and connect when it comes
    /// up. Without it, [`RedisLayer::connect`] fails at once instead.
    pub wait: bool,
    /// Longest a command may wait for its answer.
    pub command_timeout: Duration,
    /// Longest a TCP connect (plus handshake) may take.
    pub connect_timeout: Duration,
    /// Longest the readiness PING may take.
    pub health_timeout: Duration,
    /// Commands queued towards Redis beyond which new ones fail at once
    /// (backpressure) instead of holding memory.
    pub max_queued_commands: usize,
    /// Reconnect backoff: from `reconnect_min` doubling up to
    /// `reconnect_max`, forever.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Messages received but not yet handed to the hub. Overflowing it
    /// loses messages, which then makes every live room resync.
    pub receive_buffer: usize,
    /// Rooms with unsent events remembered for a `stale` notice; past it,
    /// the other nodes catch up at their next event or reconnect.
    pub max_unsent_rooms: usize,
    /// Redis Cluster only: how often the node re-reads the cluster's
    /// routing table to notice rooms whose shard changed (resharding, a
    /// replica promoted); see [`crate::redis_cluster`].
    pub topology_interval: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            channel_prefix: "roomcast:".into(),
            wait: false,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            health_timeout: Duration::from_millis(250),
            max_queued_commands: 16_384,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            receive_buffer: 16_384,
            max_unsent_rooms: 100_000,
            topology_interval: Duration::from_secs(1),
        }
    }
}

/// Why Redis could not be used; the detail behind
/// [`BroadcastError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum RedisLayerError {
    #[error("not a redis:// or redis-cluster://host:port,host:port URL")]
    Url,
    #[error("a Redis Cluster channel prefix cannot contain braces (a hash tag)")]
    Prefix,
    #[error("invalid Redis settings")]
    Config(#[source] fred::error::Error),
    #[error("cannot connect to Redis")]
    Connect(#[source] fred::error::Error),
    #[error("Redis command failed")]
    Command(#[source] fred::error::Error),
    #[error("the subscriber connection is down")]
    SubscriberDown,
}

fn unavailable(e: RedisLayerError) -> BroadcastError {
    BroadcastError::Unavailable(Box::new(e))
}

/// One node's Redis connections and the tasks that watch them.
pub struct RedisLayer {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// The receiver, resubscriber and flusher tasks.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// fred's connection tasks (they reconnect on their own).
    connections: Mutex<Vec<JoinHandle<Result<(), fred::error::Error>>>>,
}

impl std::fmt::Debug for RedisLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLayer")
            .field("node", &self.shared.node.to_string())
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    node: NodeId,
    prefix: String,
    publisher: Client,
    subscriber: SubscriberClient,
    inbox: Arc<dyn Inbox>,
    rooms: Mutex<Rooms>,
    /// Serializes the layer's SUBSCRIBE/UNSUBSCRIBE commands, so a
    /// resubscription never re-adds a room being left.
    ops: tokio::sync::Mutex<()>,
    unsent: Mutex<HashMap<RoomId, Vec<UserId>>>,
    /// Publishes, subscribes and pings fail at once when disconnected.
    fail_fast: Options,
    health: Options,
    max_unsent_rooms: usize,
    /// On Redis Cluster: where each room is subscribed (sharded pub/sub).
    shards: Option<Shards>,
}

#[derive(Default)]
struct Rooms {
    /// Rooms this node has local sockets in: what it delivers.
    live: HashSet<RoomId>,
    /// Live rooms not (or no longer) known to be subscribed in Redis.
    pending: HashSet<RoomId>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave the sets half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often the watcher tasks retry what failed (a subscription, a stale
/// notice) while the connection looks up.
const RETRY_EVERY: Duration = Duration::from_millis(250);

impl RedisLayer {
    /// Connects a node to Redis. Fails at once if Redis is unreachable,
    /// unless `config.wait` (then it connects in the background and
    /// [`ChannelLayer::health`] reports down until it does).
    pub async fn connect(
        config: RedisConfig,
        inbox: Arc<dyn Inbox>,
    ) -> Result<RedisLayer, BroadcastError> {
        let cluster = config.url.starts_with(redis_cluster::SCHEME);
        let url = if cluster {
            if !redis_cluster::prefix_is_valid(&config.channel_prefix) {
                return Err(unavailable(RedisLayerError::Prefix));
            }
            redis_cluster::fred_url(&config.url).ok_or(unavailable(RedisLayerError::Url))?
        } else if config.url.starts_with("redis://") {
            config.url.clone()
        } else {
            return Err(unavailable(RedisLayerError::Url));
        };
        let mut fred_config =
            Config::from_url(&url).map_err(|e| unavailable(RedisLayerError::Config(e)))?;
        let expected = match fred_config.server {
            ServerConfig::Centralized { .. } => !cluster,
            ServerConfig::Clustered { .. } => cluster,
            _ => false,
        };
        if !expected {
            return Err(unavailable(RedisLayerError::Url));
        }
        // `fail_fast` here is about the first connection only: give up at
        // once, or retry it with the reconnect policy when told to wait.
        fred_config.fail_fast = !config.wait;
        let mut builder = Builder::from_config(fred_config);
        builder
            .with_performance_config(|perf| {
                perf.default_command_timeout = config.command_timeout;
                perf.broadcast_channel_capacity = config.receive_buffer.max(1);
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = config.connect_timeout;
                conn.internal_command_timeout = config.command_timeout;
                conn.max_command_buffer_len = config.max_queued_commands;
                conn.tcp.nodelay = Some(true);
                // A connection that stops answering is closed and
                // reconnected, instead of silently eating publications.
                conn.unresponsive.max_timeout = Some(config.command_timeout * 2);
                conn.unresponsive.interval = config.command_timeout / 2;
            })
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                millis(config.reconnect_min),
                millis(config.reconnect_max),
                2,
            ));
        let publisher = builder
            .build()
            .map_err(|e| unavailable(RedisLayerError::Config(e)))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| unavailable(RedisLayerError::Config(e)))?;
        let shared = Arc::new(Shared {
            node: NodeId::random(),
            prefix: config.channel_prefix.clone(),
            publisher,
            subscriber,
            inbox,
            rooms: Mutex::new(Rooms::default()),
            ops: tokio::sync::Mutex::new(()),
            unsent: Mutex::new(HashMap::new()),
            fail_fast: Options {
                fail_fast: true,
                max_attempts: Some(1),
                ..Options::default()
            },
            health: Options {
                fail_fast: true,
                max_attempts: Some(1),
                timeout: Some(config.health_timeout),
                ..Options::default()
            },
            max_unsent_rooms: config.max_unsent_rooms,
            shards: cluster.then(Shards::default),
        });
        // Listen before connecting, so the first connection's event and
        // the first messages are not missed.
        let messages = shared.subscriber.message_rx();
        let sub_connected = shared.subscriber.reconnect_rx();
        let pub_connected = shared.publisher.reconnect_rx();
        let mut connections = Vec::new();
        if config.wait {
            connections.push(shared.publisher.connect());
            connections.push(shared.subscriber.connect());
            tracing::info!("connecting to Redis in the background");
        } else {
            connections.push(
                shared
                    .publisher
                    .init()
                    .await
                    .map_err(|e| unavailable(RedisLayerError::Connect(e)))?,
            );
            match shared.subscriber.init().await {
                Ok(handle) => connections.push(handle),
                Err(e) => {
                    let _ = shared.publisher.quit().await;
                    for handle in connections {
                        handle.abort();
                    }
                    return Err(unavailable(RedisLayerError::Connect(e)));
                }
            }
        }
        let cancel = CancellationToken::new();
        let mut tasks = vec![
            tokio::spawn(receive(shared.clone(), messages, cancel.clone())),
            tokio::spawn(resubscribe(shared.clone(), sub_connected, cancel.clone())),
            tokio::spawn(flush_unsent(shared.clone(), pub_connected, cancel.clone())),
        ];
        if cluster {
            tasks.push(tokio::spawn(redis_cluster::watch_topology(
                shared.clone(),
                shared.publisher.clone(),
                config.topology_interval,
                config.command_timeout,
                cancel.clone(),
            )));
        }
        tracing::info!(node = %shared.node, prefix = %shared.prefix, cluster, "Redis channel layer started");
        Ok(RedisLayer {
            shared,
            cancel,
            tasks: Mutex::new(tasks),
            connections: Mutex::new(connections),
        })
    }

    /// This node's id on the wire.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }
}

/// Now, in milliseconds since the Unix epoch (the nodes' clocks are
/// assumed to agree to well within a state's TTL).
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Shared {
    pub(crate) fn channel(&self, room: RoomId) -> String {
        format!("{}room:{room}", self.prefix)
    }

    pub(crate) fn shards(&self) -> Option<&Shards> {
        self.shards.as_ref()
    }

    pub(crate) fn subscriber(&self) -> &SubscriberClient {
        &self.subscriber
    }

    /// Live rooms among `rooms` lost their subscription: the next
    /// [`Shared::settle`] subscribes and resyncs them.
    pub(crate) fn mark_pending(&self, rooms: &[RoomId]) {
        let mut state = lock(&self.rooms);
        for room in rooms {
            if state.live.contains(room) {
                state.pending.insert(*room);
            }
        }
    }

    /// On a cluster, whether `error` says the room's shard is out of reach
    /// for now (its primary down, a failover under way) while the others
    /// answer: the room waits pending, as on a Redis outage.
    fn shard_down(&self, error: &fred::error::Error) -> bool {
        use fred::error::ErrorKind;
        self.shards.is_some()
            && matches!(
                error.kind(),
                ErrorKind::IO
                    | ErrorKind::Timeout
                    | ErrorKind::Canceled
                    | ErrorKind::Cluster
                    | ErrorKind::Routing
            )
    }

    pub(crate) fn has_pending(&self) -> bool {
        !lock(&self.rooms).pending.is_empty()
    }

    /// Subscribes `rooms`' channels: one SUBSCRIBE on one Redis, one
    /// SSUBSCRIBE per slot on a cluster. Returns the rooms subscribed, and
    /// the error that kept the others out.
    async fn subscribe_rooms(&self, rooms: &[RoomId]) -> (Vec<RoomId>, Option<fred::error::Error>) {
        match &self.shards {
            Some(shards) => {
                shards
                    .subscribe(&self.subscriber, &self.fail_fast, rooms, |r| {
                        self.channel(r)
                    })
                    .await
            }
            None => {
                let channels: Vec<String> = rooms.iter().map(|r| self.channel(*r)).collect();
                match self
                    .subscriber
                    .with_options(&self.fail_fast)
                    .subscribe(channels)
                    .await
                {
                    Ok(()) => (rooms.to_vec(), None),
                    Err(e) => (Vec::new(), Some(e)),
                }
            }
        }
    }

    async fn unsubscribe_room(&self, room: RoomId) -> Result<(), fred::error::Error> {
        let subscriber = self.subscriber.with_options(&self.fail_fast);
        match &self.shards {
            Some(shards) => {
                shards.forget(room);
                subscriber.sunsubscribe(self.channel(room)).await
            }
            None => subscriber.unsubscribe(self.channel(room)).await,
        }
    }

    /// The hash of a room's state: one field per node, each value its
    /// expiry (unix milliseconds, 8 bytes) then the state. Expiry per field
    /// is checked by readers (HPEXPIRE needs Redis 7.4); the key itself
    /// expires after the longest TTL written, so a room nobody serves any
    /// more leaves nothing behind.
    ///
    /// On a cluster the key sits in the room channel's slot, so a room's
    /// commands all go to one shard.
    fn state_key(&self, room: RoomId) -> String {
        match self.shards {
            Some(_) => redis_cluster::state_key(&self.prefix, room, &self.channel(room)),
            None => format!("{}state:{room}", self.prefix),
        }
    }

    async fn command<R: fred::types::FromValue>(
        &self,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, BroadcastError> {
        self.publisher
            .with_options(&self.fail_fast)
            .custom(
                CustomCommand::new_static(name, ClusterHash::FirstKey, false),
                args,
            )
            .await
            .map_err(|e| unavailable(RedisLayerError::Command(e)))
    }

    fn room_of(&self, channel: &str) -> Option<RoomId> {
        let id = channel.strip_prefix(&self.prefix)?.strip_prefix("room:")?;
        RoomId::parse(id).ok()
    }

    fn live_rooms(&self) -> Vec<RoomId> {
        lock(&self.rooms).live.iter().copied().collect()
    }

    /// Subscribes the rooms that are live but not known to be subscribed,
    /// then resyncs them: whatever was published before the SUBSCRIBE was
    /// stored before it. Returns whether nothing is left pending.
    pub(crate) async fn settle(&self) -> bool {
        let _ops = self.ops.lock().await;
        let pending: Vec<RoomId> = lock(&self.rooms).pending.iter().copied().collect();
        if pending.is_empty() {
            return true;
        }
        let (subscribed, error) = self.subscribe_rooms(&pending).await;
        if let Some(e) = error {
            tracing::debug!(error = %e, rooms = pending.len() - subscribed.len(), "resubscribe failed; will retry");
        }
        let resync: Vec<RoomId> = {
            let mut rooms = lock(&self.rooms);
            subscribed
                .into_iter()
                .filter(|r| rooms.pending.remove(r) && rooms.live.contains(r))
                .collect()
        };
        tracing::info!(
            rooms = resync.len(),
            "rooms resubscribed; resyncing from storage"
        );
        for room in resync {
            self.inbox.resync(room);
        }
        lock(&self.rooms).pending.is_empty()
    }

    /// Remembers that `room` lost a publication, to tell the others.
    fn remember_unsent(&self, room: RoomId, envelope: &Envelope) {
        let mut unsent = lock(&self.unsent);
        if !unsent.contains_key(&room) && unsent.len() >= self.max_unsent_rooms {
            tracing::warn!(%room, "too many rooms with unsent events; not remembered");
            return;
        }
        let users = unsent.entry(room).or_default();
        if let Envelope::Evict { user } = envelope
            && !users.contains(user)
        {
            users.push(*user);
        }
    }

    /// Sends a `stale` notice (and failed evictions again) for every room
    /// that lost a publication. Returns whether all went out.
    async fn flush_unsent(&self) -> bool {
        let rooms: Vec<(RoomId, Vec<UserId>)> = lock(&self.unsent).drain().collect();
        if rooms.is_empty() {
            return true;
        }
        let count = rooms.len();
        let mut all_sent = true;
        for (room, users) in rooms {
            let mut messages: Vec<WireMessage> = users
                .iter()
                .map(|&user| WireMessage::Envelope(Envelope::Evict { user }))
                .collect();
            messages.push(WireMessage::Stale);
            let mut failed_users = Vec::new();
            let mut stale_failed = false;
            for message in messages {
                if let Err(e) = self.send(room, &message).await {
                    tracing::debug!(error = %e, %room, "stale notice not sent; will retry");
                    match message {
                        WireMessage::Envelope(Envelope::Evict { user }) => failed_users.push(user),
                        _ => stale_failed = true,
                    }
                }
            }
            if stale_failed || !failed_users.is_empty() {
                all_sent = false;
                let mut unsent = lock(&self.unsent);
                let users = unsent.entry(room).or_default();
                for user in failed_users {
                    if !users.contains(&user) {
                        users.push(user);
                    }
                }
            }
        }
        if all_sent {
            tracing::info!(rooms = count, "stale notices sent after publish failures");
        }
        all_sent
    }

    async fn send(&self, room: RoomId, message: &WireMessage) -> Result<(), fred::error::Error> {
        let payload = wire::encode(self.node, message);
        let publisher = self.publisher.with_options(&self.fail_fast);
        let channel = self.channel(room);
        match self.shards {
            Some(_) => publisher.spublish::<i64, _, _>(channel, payload).await,
            None => publisher.publish::<i64, _, _>(channel, payload).await,
        }
        .map(drop)
    }

    /// Hands one received message to the hub, unless it is this node's own
    /// or for a room the node has left; garbage is logged and dropped.
    fn on_message(&self, message: Message) {
        let Some(room) = self.room_of(&message.channel) else {
            tracing::warn!(channel = %message.channel, "message on an unknown channel dropped");
            return;
        };
        let Some(payload) = message.value.into_bytes() else {
            tracing::warn!(%room, "message without a payload dropped");
            return;
        };
        self.on_payload(room, &payload);
    }

    fn on_payload(&self, room: RoomId, payload: &Bytes) {
        let (from, message) = match wire::decode(payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(error = %e, %room, len = payload.len(), "undecodable message dropped");
                return;
            }
        };
        if from == self.node || !lock(&self.rooms).live.contains(&room) {
            return;
        }
        match message {
            WireMessage::Envelope(envelope) => self.inbox.deliver(room, envelope),
            WireMessage::Stale => self.inbox.resync(room),
        }
    }
}

/// Receives messages until cancelled. A lost message (buffer overflow)
/// makes every live room resync.
async fn receive(
    shared: Arc<Shared>,
    mut messages: tokio::sync::broadcast::Receiver<Message>,
    cancel: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            received = messages.recv() => received,
        };
        match received {
            Ok(message) => shared.on_message(message),
            Err(RecvError::Lagged(lost)) => {
                let rooms = shared.live_rooms();
                tracing::warn!(
                    lost,
                    rooms = rooms.len(),
                    "receive buffer overflowed; resyncing every room"
                );
                for room in rooms {
                    shared.inbox.resync(room);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// After every (re)connection of the subscriber, subscribes every live
/// room again and resyncs it; retries while some stay pending.
async fn resubscribe(
    shared: Arc<Shared>,
    mut connected: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    cancel: CancellationToken,
) {
    let mut settled = true;
    let mut connections = Connections::new("subscriber");
    loop {
        let retry = async {
            if settled {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = connected.recv() => match event {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    if let Ok(server) = &event {
                        connections.connected(server);
                    }
                    let mut rooms = lock(&shared.rooms);
                    tracing::info!(rooms = rooms.live.len(), "subscriber connected");
                    let live: Vec<RoomId> = rooms.live.iter().copied().collect();
                    rooms.pending.extend(live);
                }
                Err(RecvError::Closed) => return,
            },
            _ = retry => {}
        }
        settled = if shared.subscriber.is_connected() {
            shared.settle().await
        } else {
            // The next connection event will come.
            true
        };
    }
}

/// After every (re)connection of the publisher, and then periodically
/// while some remain, sends the stale notices of failed publishes.
async fn flush_unsent(
    shared: Arc<Shared>,
    mut connected: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    cancel: CancellationToken,
) {
    let mut connections = Connections::new("publisher");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = connected.recv() => match event {
                Ok(server) => { connections.connected(&server); }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
        if shared.publisher.is_connected() && !lock(&shared.unsent).is_empty() {
            shared.flush_unsent().await;
        }
    }
}

#[async_trait]
impl ChannelLayer for RedisLayer {
    async fn subscribe(&self, room: RoomId) -> Result<(), BroadcastError> {
        let shared = &self.shared;
        let _ops = shared.ops.lock().await;
        lock(&shared.rooms).live.insert(room);
        let (_, error) = shared.subscribe_rooms(&[room]).await;
        match error.map_or(Ok(()), Err) {
            Ok(()) => Ok(()),
            Err(e) if !shared.subscriber.is_connected() || shared.shard_down(&e) => {
                // Serve the room locally now; the resubscriber subscribes
                // it once Redis is back and resyncs it from storage.
                tracing::warn!(error = %e, %room, "Redis is down; room subscribed once it is back");
                lock(&shared.rooms).pending.insert(room);
                Ok(())
            }
            Err(e) => {
                let mut rooms = lock(&shared.rooms);
                rooms.live.remove(&room);
                Err(unavailable(RedisLayerError::Command(e)))
            }
        }
    }

    async fn unsubscribe(&self, room: RoomId) -> Result<(), BroadcastError> {
        let shared = &self.shared;
        let _ops = shared.ops.lock().await;
        {
            let mut rooms = lock(&shared.rooms);
            rooms.live.remove(&room);
            rooms.pending.remove(&room);
        }
        // Nothing more is delivered for the room from here on, whatever
        // Redis answers: the receiver checks `live`.
        match shared.unsubscribe_room(room).await {
            Ok(()) => Ok(()),
            // A connection that comes back has no subscriptions but ours.
            Err(_) if !shared.subscriber.is_connected() => Ok(()),
            Err(e) => Err(unavailable(RedisLayerError::Command(e))),
        }
    }

    async fn publish(&self, room: RoomId, envelope: Envelope) -> Result<(), BroadcastError> {
        let shared = &self.shared;
        let message = WireMessage::Envelope(envelope);
        match shared.send(room, &message).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let WireMessage::Envelope(envelope) = &message
                    && !matches!(envelope, Envelope::Ephemeral { .. } | Envelope::Presence(_))
                {
                    shared.remember_unsent(room, envelope);
                }
                Err(unavailable(RedisLayerError::Command(e)))
            }
        }
    }

    async fn put_state(
        &self,
        room: RoomId,
        state: Bytes,
        ttl: Duration,
    ) -> Result<(), BroadcastError> {
        let shared = &self.shared;
        let key = shared.state_key(room);
        let expires =
            unix_millis().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut value = Vec::with_capacity(8 + state.len());
        value.extend_from_slice(&expires.to_be_bytes());
        value.extend_from_slice(&state);
        shared
            .command::<Value>(
                "HSET",
                vec![
                    key.clone().into(),
                    shared.node.to_string().into(),
                    Bytes::from(value).into(),
                ],
            )
            .await?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        // The key outlives every entry (NX: a TTL for a new key; GT: only
        // ever longer), and goes when no node writes any more.
        for option in ["NX", "GT"] {
            shared
                .command::<Value>(
                    "PEXPIRE",
                    vec![key.clone().into(), ttl_ms.into(), option.into()],
                )
                .await?;
        }
        Ok(())
    }

    async fn states(&self, room: RoomId) -> Result<Vec<Bytes>, BroadcastError> {
        let shared = &self.shared;
        let key = shared.state_key(room);
        let entries: HashMap<String, Bytes> =
            shared.command("HGETALL", vec![key.clone().into()]).await?;
        let now = unix_millis();
        let mut live = Vec::new();
        let mut expired: Vec<Value> = vec![key.into()];
        for (node, value) in entries {
            let expires = value
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            match expires {
                Some(at) if at > now => live.push(value.slice(8..)),
                _ => expired.push(node.into()),
            }
        }
        if expired.len() > 1 {
            // Best effort: a dead node's entry is skipped by readers anyway.
            let _ = shared.command::<Value>("HDEL", expired).await;
        }
        Ok(live)
    }

    async fn clear_state(&self, room: RoomId) -> Result<(), BroadcastError> {
        let shared = &self.shared;
        shared
            .command::<Value>(
                "HDEL",
                vec![
                    shared.state_key(room).into(),
                    shared.node.to_string().into(),
                ],
            )
            .await
            .map(drop)
    }

    /// A PING on the publisher connection, failing fast and bounded by
    /// `health_timeout`, plus the subscriber's connection state (it cannot
    /// PING while subscribed on RESP2).
    async fn health(&self) -> Result<(), BroadcastError> {
        let shared = &self.shared;
        shared
            .publisher
            .with_options(&shared.health)
            .ping::<String>(None)
            .await
            .map_err(|e| unavailable(RedisLayerError::Command(e)))?;
        if !shared.subscriber.is_connected() {
            return Err(unavailable(RedisLayerError::SubscriberDown));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        match self.shared.shards {
            Some(_) => "redis-cluster",
            None => "redis",
        }
    }

    async fn close(&self) {
        self.cancel.cancel();
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        let grace = Duration::from_secs(1);
        let quits = [
            tokio::time::timeout(grace, self.shared.publisher.quit()).await,
            tokio::time::timeout(grace, self.shared.subscriber.quit()).await,
        ];
        for quit in quits {
            if let Ok(Err(e)) = quit {
                tracing::debug!(error = %e, "Redis quit failed");
            }
        }
        let connections: Vec<_> = lock(&self.connections).drain(..).collect();
        for mut connection in connections {
            if tokio::time::timeout(grace, &mut connection).await.is_err() {
                connection.abort();
            }
        }
    }
}

impl Drop for RedisLayer {
    /// Without [`ChannelLayer::close`] (a test, a failed start): end the
    /// tasks and connections rather than leave them running.
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for connection in lock(&self.connections).drain(..) {
            connection.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::RecordingInbox;
    use roomcast_domain::Seq;

    /// A layer's receiving half without a Redis: what `on_payload` does
    /// with what arrives.
    fn offline(inbox: Arc<RecordingInbox>) -> Shared {
        let builder = Builder::default_centralized();
        Shared {
            node: NodeId::random(),
            prefix: "t:".into(),
            publisher: builder.build().expect("client"),
            subscriber: builder.build_subscriber_client().expect("client"),
            inbox,
            rooms: Mutex::new(Rooms::default()),
            ops: tokio::sync::Mutex::new(()),
            unsent: Mutex::new(HashMap::new()),
            fail_fast: Options::default(),
            health: Options::default(),
            max_unsent_rooms: 2,
            shards: None,
        }
    }

    #[tokio::test]
    async fn own_garbage_and_left_rooms_messages_are_dropped() {
        let inbox = Arc::new(RecordingInbox::default());
        let shared = offline(inbox.clone());
        let (room, left) = (RoomId::new(), RoomId::new());
        lock(&shared.rooms).live.insert(room);
        let event = Envelope::Event {
            seq: Seq::new(1),
            frame: Bytes::from_static(b"{}"),
        };
        let other = NodeId::random();
        let msg = WireMessage::Envelope(event.clone());
        shared.on_payload(room, &wire::encode(shared.node, &msg));
        shared.on_payload(left, &wire::encode(other, &msg));
        shared.on_payload(room, &Bytes::from_static(b"\x01garbage"));
        shared.on_payload(room, &Bytes::new());
        shared.on_payload(room, &wire::encode(other, &msg));
        assert_eq!(inbox.next().await, (room, event));
        inbox.assert_empty().await;
    }

    #[test]
    fn channels_name_their_room_under_the_prefix() {
        let shared = offline(Arc::new(RecordingInbox::default()));
        let room = RoomId::new();
        let channel = shared.channel(room);
        assert_eq!(channel, format!("t:room:{room}"));
        assert_eq!(shared.room_of(&channel), Some(room));
        assert_eq!(shared.room_of("t:room:nope"), None);
        assert_eq!(shared.room_of(&format!("u:room:{room}")), None);
    }

    #[test]
    fn unsent_rooms_are_bounded_and_evictions_kept_once() {
        let shared = offline(Arc::new(RecordingInbox::default()));
        let user = UserId::new();
        let (a, b, c) = (RoomId::new(), RoomId::new(), RoomId::new());
        shared.remember_unsent(a, &Envelope::Evict { user });
        shared.remember_unsent(a, &Envelope::Evict { user });
        shared.remember_unsent(
            b,
            &Envelope::Event {
                seq: Seq::new(1),
                frame: Bytes::new(),
            },
        );
        shared.remember_unsent(c, &Envelope::Evict { user });
        let unsent = lock(&shared.unsent);
        assert_eq!(unsent.len(), 2);
        assert_eq!(unsent.get(&a), Some(&vec![user]));
        assert_eq!(unsent.get(&b), Some(&vec![]));
    }
}
