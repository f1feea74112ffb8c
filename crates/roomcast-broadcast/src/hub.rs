//! A node's local fan-out: one in-process channel per room that all the
//! node's sockets in that room read, fed by local publications and by the
//! channel layer, with a room's stored events put back in `seq` order.
//!
//! Why order here: concurrent senders in one room are committed together
//! (group commit) and their events are published by different tasks, so
//! seq 7 may be published a moment before seq 6. Each room keeps the next
//! seq it expects, holds early events, and releases them when the gap
//! closes. A gap that does not close within `gap_timeout` (a publisher died
//! between commit and publish, the layer lost a message) is filled from
//! storage through [`Backfill`]. So sockets see each event once, in order,
//! and the work is done once per room per node, not once per socket.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_domain::wire::{ChatEvent, ServerFrame};
use roomcast_domain::{RoomId, Seq, UserId, Username};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::presence::{PresenceChange, PresenceNotice, PresenceTiming, RoomPresence, Transition};
use crate::{BroadcastError, ChannelLayer, Envelope, InMemoryLayer, Inbox, wire};

/// Where the hub fetches stored events it did not receive.
#[async_trait]
pub trait Backfill: Send + Sync + 'static {
    /// The room's latest stored seq.
    async fn last_seq(&self, room: RoomId) -> Result<Seq, BroadcastError>;
    /// Stored events with seq > `after`, in order, at most `limit`.
    async fn events_after(
        &self,
        room: RoomId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<Envelope>, BroadcastError>;
}

/// Tuning of the local fan-out.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Envelopes a room's channel holds for its slowest local socket. A
    /// socket further behind than this is lagging: it is closed (1013) and
    /// resumes from storage, instead of holding memory or slowing the room.
    pub room_capacity: usize,
    /// How long an early event waits for the ones before it before the gap
    /// is filled from storage.
    pub gap_timeout: Duration,
    /// Ephemeral envelopes a room holds for its slowest local socket. A
    /// socket further behind skips the oldest (it gets the room's presence
    /// list again instead): ephemeral events never close a socket.
    pub ephemeral_capacity: usize,
    pub presence: PresenceTiming,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            room_capacity: 256,
            gap_timeout: Duration::from_millis(200),
            ephemeral_capacity: 64,
            presence: PresenceTiming::default(),
        }
    }
}

/// Events fetched per storage round trip when a room resyncs.
const RESYNC_PAGE: u32 = 500;
/// Storage failures a resync tolerates (one `gap_timeout` apart) before it
/// gives up; the next event's gap repair then catches the room up.
const RESYNC_ATTEMPTS: u32 = 5;

/// A local socket's subscription to its room: stored events (and
/// evictions) through one bounded channel that a lagging socket is closed
/// for, ephemeral events through another that it may skip in.
pub struct RoomFeed {
    room: RoomId,
    rx: broadcast::Receiver<Slot>,
    ephemeral: broadcast::Receiver<Slot>,
    local: Arc<LocalRoom>,
    /// The user this socket is present as ([`Hub::arrive`]): their own
    /// ephemeral events are not sent back to them.
    user: Option<UserId>,
}

impl std::fmt::Debug for RoomFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomFeed")
            .field("room", &self.room)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What a room channel holds: a pointer, not the envelope itself. Why:
/// tokio's broadcast channel allocates all `room_capacity` slots when the
/// room opens, so the slot size is paid 256 times per room (about 1.8 KB
/// per member of a 10-member room with an inline envelope, 0.7 KB boxed).
type Slot = Arc<Envelope>;

/// Why a [`RoomFeed`] gave no envelope: the hub's own terms, not its
/// channel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The reader fell more than `room_capacity` stored events behind and
    /// this many were dropped for it: it must catch up from storage or be
    /// closed.
    #[error("fell {0} stored events behind")]
    Lagged(u64),
    /// The room's group is gone (the hub was dropped).
    #[error("the room's feed ended")]
    Closed,
}

impl From<broadcast::error::RecvError> for FeedError {
    fn from(e: broadcast::error::RecvError) -> Self {
        match e {
            broadcast::error::RecvError::Lagged(n) => FeedError::Lagged(n),
            broadcast::error::RecvError::Closed => FeedError::Closed,
        }
    }
}

impl RoomFeed {
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// The next envelope, stored events first. `Err(Lagged)` means this
    /// reader fell more than `room_capacity` stored events behind and
    /// envelopes were dropped for it. Ephemeral ones it fell behind on are
    /// skipped: it gets the room's presence list in their place.
    pub async fn recv(&mut self) -> Result<Envelope, FeedError> {
        // Most wakes under load find an envelope waiting: take it without
        // registering (and then unlinking) a waiter on both channels, a
        // lock on each room channel per socket per wake.
        if let Some(envelope) = self.try_recv()? {
            return Ok(envelope);
        }
        loop {
            let got = tokio::select! {
                biased;
                stored = self.rx.recv() => {
                    return stored.map(Arc::unwrap_or_clone).map_err(FeedError::from);
                }
                got = self.ephemeral.recv() => got,
            };
            match got {
                Ok(slot) => {
                    if let Some(envelope) = self.keep(slot) {
                        return Ok(envelope);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(self.presence()),
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    /// The next envelope if one is ready, without waiting: `Ok(None)` when
    /// none is.
    pub fn try_recv(&mut self) -> Result<Option<Envelope>, FeedError> {
        use broadcast::error::TryRecvError;
        match self.rx.try_recv() {
            Ok(slot) => return Ok(Some(Arc::unwrap_or_clone(slot))),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
            Err(TryRecvError::Closed) => return Err(FeedError::Closed),
        }
        loop {
            match self.ephemeral.try_recv() {
                Ok(slot) => {
                    if let Some(envelope) = self.keep(slot) {
                        return Ok(Some(envelope));
                    }
                }
                Err(TryRecvError::Lagged(_)) => return Ok(Some(self.presence())),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    /// The ephemeral envelope, unless it is this socket's user's own.
    fn keep(&self, slot: Slot) -> Option<Envelope> {
        match &*slot {
            Envelope::Ephemeral {
                from: Some(from), ..
            } if Some(*from) == self.user => None,
            _ => Some(Arc::unwrap_or_clone(slot)),
        }
    }

    /// `{"type":"chat_event","action":"presence","users":[...]}` as the
    /// room stands now.
    pub fn presence(&self) -> Envelope {
        let users = lock(&self.local.presence).users();
        Envelope::Ephemeral {
            frame: presence_frame(users),
            from: None,
        }
    }
}

fn presence_frame(users: Vec<Username>) -> Bytes {
    Bytes::from(ServerFrame::Event(ChatEvent::Presence { users }).to_json())
}

fn transition_envelope(transition: Transition) -> Envelope {
    let (user, event) = match transition {
        Transition::Join(user, name) => (user, ChatEvent::Join { user: name }),
        Transition::Leave(user, name) => (user, ChatEvent::Leave { user: name }),
    };
    Envelope::Ephemeral {
        frame: Bytes::from(ServerFrame::Event(event).to_json()),
        from: Some(user),
    }
}

/// A node's fan-out hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    local: Arc<LocalRooms>,
    layer: Arc<dyn ChannelLayer>,
    /// Serializes the first join and last leave of rooms, so a subscribe
    /// and an unsubscribe of the same room never race in the layer.
    transitions: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("layer", &self.layer.name())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Hub`]: the layer needs the hub's inbox before the hub exists.
pub struct HubBuilder {
    local: Arc<LocalRooms>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder").finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// Where the node's channel layer must deliver.
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        self.local.clone()
    }

    /// The hub, with its presence ticker running (call inside a runtime).
    pub fn build(self, layer: Arc<dyn ChannelLayer>) -> Hub {
        let hub = Hub {
            local: self.local,
            layer,
            transitions: Arc::new(tokio::sync::Mutex::new(())),
        };
        let ticker = hub.clone();
        hub.local
            .repairs
            .spawn(async move { ticker.tick_presence().await });
        hub
    }

    /// A hub alone in its process, on an in-memory layer.
    pub fn standalone(self) -> Hub {
        let layer = InMemoryLayer::standalone(self.inbox());
        self.build(Arc::new(layer))
    }
}

impl Hub {
    pub fn builder(config: HubConfig, backfill: Arc<dyn Backfill>) -> HubBuilder {
        HubBuilder {
            local: Arc::new_cyclic(|me| LocalRooms {
                me: me.clone(),
                rooms: Mutex::new(HashMap::new()),
                backfill,
                config,
                repairs: TaskTracker::new(),
                node: Uuid::new_v4(),
                stop: CancellationToken::new(),
            }),
        }
    }

    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.layer
    }

    /// Subscribes a local socket to its room, subscribing the node to the
    /// room's group first if it is the room's first local socket.
    pub async fn join(&self, room: RoomId) -> Result<RoomFeed, BroadcastError> {
        if let Some(feed) = self.local.feed(room) {
            return Ok(feed);
        }
        let _transition = self.transitions.lock().await;
        if let Some(feed) = self.local.feed(room) {
            return Ok(feed);
        }
        // Insert first, with the next seq unknown: anything the layer
        // delivers from now on is held until we know where the room is.
        let feed = self.local.insert(room);
        if let Err(e) = self.layer.subscribe(room).await {
            self.local.remove_if_unused(room, Some(feed));
            return Err(e);
        }
        self.read_presence(room).await;
        match self.local.backfill.last_seq(room).await {
            Ok(last) => {
                self.local.start_at(room, last.next());
                Ok(feed)
            }
            Err(e) => {
                if self.local.remove_if_unused(room, Some(feed)) {
                    let _ = self.layer.unsubscribe(room).await;
                }
                Err(e)
            }
        }
    }

    /// Ends a local socket's subscription (and its presence); unsubscribes
    /// the node from the room's group when it was the last one and no user's
    /// presence grace is pending there (then the presence ticker does).
    pub async fn leave(&self, feed: RoomFeed) {
        let room = feed.room;
        if let Some(user) = feed.user {
            lock(&feed.local.presence).depart(user, Instant::now());
        }
        drop(feed);
        self.leave_if_unused(room).await;
    }

    async fn leave_if_unused(&self, room: RoomId) {
        if !self.local.is_unused(room) {
            return;
        }
        let _transition = self.transitions.lock().await;
        if self.local.remove_if_unused(room, None)
            && let Err(e) = self.layer.unsubscribe(room).await
        {
            tracing::warn!(error = %e, %room, "unsubscribe failed");
        }
    }

    /// Makes the feed's socket present in its room as `user`: a `join` for
    /// the room's other sockets (on every node) if the user was present
    /// nowhere, and from now on the user's own ephemeral events are not
    /// sent back to this socket. Returns the room's presence list for it.
    pub async fn arrive(&self, feed: &mut RoomFeed, user: UserId, name: &Username) -> Envelope {
        if feed.user.is_some() {
            return feed.presence();
        }
        feed.user = Some(user);
        let (join, announce) = lock(&feed.local.presence).arrive(user, name);
        if let Some(join) = join {
            let _ = feed
                .local
                .ephemeral
                .send(Arc::new(transition_envelope(join)));
        }
        if announce {
            // Stored at once, not at the next tick: a node that starts
            // serving the room reads it, and may do so any moment now.
            let snapshot = PresenceNotice {
                node: self.local.node,
                change: PresenceChange::Snapshot {
                    users: lock(&feed.local.presence).snapshot(),
                },
            };
            let state = wire::encode_presence(&snapshot);
            let ttl = self.local.config.presence.ttl;
            if let Err(e) = self.layer.put_state(feed.room, state, ttl).await {
                tracing::debug!(error = %e, room = %feed.room, "presence not stored");
            }
            let notice = PresenceNotice {
                node: self.local.node,
                change: PresenceChange::Online {
                    user,
                    name: name.clone(),
                },
            };
            if let Err(e) = self
                .layer
                .publish(feed.room, Envelope::Presence(notice))
                .await
            {
                tracing::debug!(error = %e, room = %feed.room, "presence not sent to other nodes");
            }
        }
        feed.presence()
    }

    /// Usernames with a socket in the room on any node: this node's view if
    /// it serves the room, else the snapshots the nodes stored in the layer.
    pub async fn presence(&self, room: RoomId) -> Result<Vec<Username>, BroadcastError> {
        if let Some(local) = self.local.room(room) {
            return Ok(lock(&local.presence).users());
        }
        let mut users = std::collections::BTreeSet::new();
        for state in self.layer.states(room).await? {
            if let Ok(PresenceNotice {
                change: PresenceChange::Snapshot { users: some },
                ..
            }) = wire::decode_presence(&state)
            {
                users.extend(some.into_iter().map(|(_, name)| name));
            }
        }
        Ok(users.into_iter().collect())
    }

    /// What the other nodes stored about the room, read once when this node
    /// starts serving it (later news comes through the room's channel).
    async fn read_presence(&self, room: RoomId) {
        let states = match self.layer.states(room).await {
            Ok(states) => states,
            Err(e) => {
                tracing::debug!(error = %e, %room, "presence of other nodes unknown until their heartbeat");
                return;
            }
        };
        let Some(local) = self.local.room(room) else {
            return;
        };
        let expires = Instant::now() + self.local.config.presence.ttl;
        let mut presence = lock(&local.presence);
        for state in states {
            match wire::decode_presence(&state) {
                Ok(notice) if notice.node != self.local.node => {
                    presence.apply(notice, expires, true);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, %room, "stored presence dropped"),
            }
        }
    }

    /// Ends presence graces and silent nodes, sends this node's snapshots
    /// (heartbeat), and leaves rooms nobody is in any more; until shutdown.
    async fn tick_presence(self) {
        let timing = self.local.config.presence;
        let every = (timing.grace.min(timing.heartbeat) / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = Instant::now();
        loop {
            tokio::select! {
                () = self.local.stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = Instant::now();
            let beat = now >= last_beat + timing.heartbeat;
            if beat {
                last_beat = now;
            }
            let rooms: Vec<(RoomId, Arc<LocalRoom>)> = self
                .local
                .lock()
                .iter()
                .map(|(id, room)| (*id, room.clone()))
                .collect();
            for (room, local) in rooms {
                self.sweep_room(room, &local, now, beat).await;
            }
        }
    }

    async fn sweep_room(&self, room: RoomId, local: &LocalRoom, now: Instant, beat: bool) {
        let timing = self.local.config.presence;
        let (offline, leaves, snapshot, had_local) = {
            let mut presence = lock(&local.presence);
            let had_local = presence.has_local();
            let (offline, leaves) = presence.sweep(now, timing.grace);
            let dirty = std::mem::take(&mut presence.dirty) || !offline.is_empty();
            let snapshot = (beat || dirty).then(|| presence.snapshot());
            (offline, leaves, snapshot, had_local)
        };
        for leave in leaves {
            let _ = local.ephemeral.send(Arc::new(transition_envelope(leave)));
        }
        for user in offline {
            let notice = PresenceNotice {
                node: self.local.node,
                change: PresenceChange::Offline { user },
            };
            let _ = self.layer.publish(room, Envelope::Presence(notice)).await;
        }
        match snapshot {
            Some(users) if !users.is_empty() => {
                let notice = PresenceNotice {
                    node: self.local.node,
                    change: PresenceChange::Snapshot { users },
                };
                let state = wire::encode_presence(&notice);
                if let Err(e) = self.layer.put_state(room, state, timing.ttl).await {
                    tracing::debug!(error = %e, %room, "presence not stored");
                }
                if beat {
                    let _ = self.layer.publish(room, Envelope::Presence(notice)).await;
                }
            }
            Some(_) if had_local => {
                let _ = self.layer.clear_state(room).await;
            }
            _ => {}
        }
        if had_local {
            self.leave_if_unused(room).await;
        }
    }

    /// Sends an envelope to every socket of the room: this node's directly,
    /// other nodes' through the layer. Local sockets are served even when
    /// the layer fails; the error says the other nodes may not have it.
    pub async fn publish(&self, room: RoomId, envelope: Envelope) -> Result<(), BroadcastError> {
        self.local.deliver(room, envelope.clone());
        self.layer.publish(room, envelope).await
    }

    /// Closes `user`'s sockets in `room` on every node (policy close 1008).
    pub async fn evict(&self, room: RoomId, user: UserId) -> Result<(), BroadcastError> {
        self.publish(room, Envelope::Evict { user }).await
    }

    /// Rooms with at least one local socket.
    pub fn local_rooms(&self) -> usize {
        self.local.lock().len()
    }

    /// Says goodbye (this node's users leave every room at once, on every
    /// node), ends the channel layer, then waits for pending gap repairs and
    /// resyncs to finish (on shutdown).
    pub async fn close(&self) {
        self.local.stop.cancel();
        let rooms: Vec<(RoomId, Arc<LocalRoom>)> = self
            .local
            .lock()
            .iter()
            .map(|(id, room)| (*id, room.clone()))
            .collect();
        for (room, local) in rooms {
            if !lock(&local.presence).has_local() {
                continue;
            }
            let goodbye = PresenceNotice {
                node: self.local.node,
                change: PresenceChange::Snapshot { users: vec![] },
            };
            let _ = self.layer.publish(room, Envelope::Presence(goodbye)).await;
            let _ = self.layer.clear_state(room).await;
        }
        self.layer.close().await;
        self.local.repairs.close();
        self.local.repairs.wait().await;
    }
}

/// The node's rooms; what the channel layer delivers into.
struct LocalRooms {
    /// Lets a delivery spawn a repair task that outlives the call.
    me: Weak<LocalRooms>,
    rooms: Mutex<HashMap<RoomId, Arc<LocalRoom>>>,
    backfill: Arc<dyn Backfill>,
    config: HubConfig,
    repairs: TaskTracker,
    /// This hub's id in presence notices.
    node: Uuid,
    /// Ends the presence ticker.
    stop: CancellationToken,
}

struct LocalRoom {
    tx: broadcast::Sender<Slot>,
    ephemeral: broadcast::Sender<Slot>,
    order: Mutex<Sequencer>,
    presence: Mutex<LocalPresence>,
}

/// A room's presence, and whether this node's snapshot changed since it
/// was last stored.
#[derive(Default)]
struct LocalPresence {
    view: RoomPresence,
    dirty: bool,
}

impl std::ops::Deref for LocalPresence {
    type Target = RoomPresence;
    fn deref(&self) -> &RoomPresence {
        &self.view
    }
}

impl std::ops::DerefMut for LocalPresence {
    fn deref_mut(&mut self) -> &mut RoomPresence {
        &mut self.view
    }
}

/// Puts one room's stored events in seq order.
#[derive(Default)]
struct Sequencer {
    /// The seq the room's sockets expect next; `None` until the room's
    /// position has been read from storage.
    next: Option<Seq>,
    /// Events that arrived before the ones they follow.
    early: BTreeMap<Seq, Envelope>,
    /// A repair task is watching this room's gap (whatever the resync
    /// does: the two fill the same `early` map and release through it).
    repairing: bool,
    /// Where the room's catch-up from storage stands.
    resync: Resync,
}

/// A room's resync from storage (after the layer lost messages): one task
/// at a time, and never one before the room's position is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Resync {
    /// None asked for, or the last one finished.
    #[default]
    Idle,
    /// Asked for before the room's position was known: starts once it is.
    Wanted,
    /// A task is fetching the room's stored events.
    Running,
    /// Asked for again while a task ran: the task runs once more, since it
    /// may have read storage before the loss.
    Again,
}

impl Sequencer {
    /// A resync is asked for. True when a task must be started now.
    fn ask_resync(&mut self) -> bool {
        let (state, start) = match (self.next, self.resync) {
            (None, _) => (Resync::Wanted, false),
            (Some(_), Resync::Running | Resync::Again) => (Resync::Again, false),
            (Some(_), Resync::Idle | Resync::Wanted) => (Resync::Running, true),
        };
        self.resync = state;
        start
    }

    /// The room's position became known: true when a resync was waiting
    /// for it and must be started now.
    fn position_known(&mut self, next: Seq) -> bool {
        self.next = Some(next);
        self.resync == Resync::Wanted && self.ask_resync()
    }

    /// The running task finished a pass: true when it must run once more
    /// (asked for again meanwhile); otherwise the resync is over.
    fn resync_pass_done(&mut self) -> bool {
        let again = self.resync == Resync::Again;
        self.resync = if again { Resync::Running } else { Resync::Idle };
        again
    }

    /// The running task gave up (storage unreachable); the next event's
    /// gap repair catches the room up.
    fn resync_given_up(&mut self) {
        self.resync = Resync::Idle;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code holding these locks can leave them half-updated on panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalRoom {
    fn is_unused(&self) -> bool {
        self.tx.receiver_count() == 0 && !lock(&self.presence).has_local()
    }
}

impl LocalRooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, Arc<LocalRoom>>> {
        lock(&self.rooms)
    }

    fn room(&self, room: RoomId) -> Option<Arc<LocalRoom>> {
        self.lock().get(&room).cloned()
    }

    fn feed(&self, room: RoomId) -> Option<RoomFeed> {
        let rooms = self.lock();
        let local = rooms.get(&room)?;
        // Still being joined: take the slow path and wait for it.
        lock(&local.order).next?;
        Some(RoomFeed {
            room,
            rx: local.tx.subscribe(),
            ephemeral: local.ephemeral.subscribe(),
            local: local.clone(),
            user: None,
        })
    }

    fn insert(&self, room: RoomId) -> RoomFeed {
        let (tx, rx) = broadcast::channel(self.config.room_capacity);
        let (ephemeral, ephemeral_rx) = broadcast::channel(self.config.ephemeral_capacity.max(1));
        let local = Arc::new(LocalRoom {
            tx,
            ephemeral,
            order: Mutex::new(Sequencer::default()),
            presence: Mutex::new(LocalPresence::default()),
        });
        self.lock().insert(room, local.clone());
        RoomFeed {
            room,
            rx,
            ephemeral: ephemeral_rx,
            local,
            user: None,
        }
    }

    fn is_unused(&self, room: RoomId) -> bool {
        self.lock().get(&room).is_some_and(|r| r.is_unused())
    }

    /// Removes the room if no socket reads it and no presence is pending
    /// there (after dropping `feed`).
    fn remove_if_unused(&self, room: RoomId, feed: Option<RoomFeed>) -> bool {
        drop(feed);
        let mut rooms = self.lock();
        if rooms.get(&room).is_some_and(|r| r.is_unused()) {
            rooms.remove(&room);
            return true;
        }
        false
    }

    fn start_at(&self, room: RoomId, next: Seq) {
        if let Some(local) = self.room(room) {
            let mut order = lock(&local.order);
            let resync = order.position_known(next);
            self.release(room, &local, &mut order);
            if resync {
                self.spawn_resync(room);
            }
        }
    }

    /// Starts fetching the room's stored events after its position, unless
    /// a resync is already running (then that one runs once more) or the
    /// position is not known yet (then it starts once it is).
    fn start_resync(&self, room: RoomId, order: &mut Sequencer) {
        if order.ask_resync() {
            self.spawn_resync(room);
        }
    }

    fn spawn_resync(&self, room: RoomId) {
        if let Some(this) = self.me.upgrade() {
            self.repairs
                .spawn(async move { this.resync_from_storage(room).await });
        }
    }

    /// Catches a room up from storage: everything stored after what its
    /// sockets were sent, page by page, through the same ordering as live
    /// events (so nothing is sent twice or out of order).
    async fn resync_from_storage(self: Arc<Self>, room: RoomId) {
        let mut failures = 0;
        loop {
            let Some(local) = self.room(room) else { return };
            let Some(next) = lock(&local.order).next else {
                return;
            };
            let fetched = self
                .backfill
                .events_after(room, next.prev(), RESYNC_PAGE)
                .await;
            let mut order = lock(&local.order);
            match fetched {
                Ok(envelopes) => {
                    let full = envelopes.len() >= RESYNC_PAGE as usize;
                    tracing::debug!(%room, after = %next.prev(), count = envelopes.len(), "room resynced from storage");
                    for env in envelopes {
                        if let Some(seq) = env.seq() {
                            order.early.entry(seq).or_insert(env);
                        }
                    }
                    self.release(room, &local, &mut order);
                    if full || order.resync_pass_done() {
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= RESYNC_ATTEMPTS {
                        tracing::warn!(error = %e, %room, "resync from storage failed; giving up until the next event");
                        order.resync_given_up();
                        return;
                    }
                    tracing::warn!(error = %e, %room, "resync from storage failed; will retry");
                }
            }
            drop(order);
            tokio::time::sleep(self.config.gap_timeout).await;
        }
    }

    /// Sends what is in order, drops what was already sent, and starts a
    /// repair when an early event is left waiting.
    fn release(&self, room: RoomId, local: &LocalRoom, order: &mut Sequencer) {
        let Some(mut next) = order.next else { return };
        while let Some(entry) = order.early.first_entry() {
            let seq = *entry.key();
            if seq < next {
                entry.remove(); // a duplicate
            } else if seq == next {
                // No receiver left is fine: the room is being left.
                let _ = local.tx.send(Arc::new(entry.remove()));
                next = next.next();
            } else {
                break;
            }
        }
        order.next = Some(next);
        if !order.early.is_empty()
            && !order.repairing
            && let Some(this) = self.me.upgrade()
        {
            order.repairing = true;
            self.repairs.spawn(async move { this.repair(room).await });
        }
    }

    /// Waits for a gap to close by itself, then fills it from storage. If
    /// it is still open afterwards (storage unreachable), `release` starts
    /// the next attempt.
    async fn repair(self: Arc<Self>, room: RoomId) {
        tokio::time::sleep(self.config.gap_timeout).await;
        let Some(local) = self.room(room) else { return };
        let gap = {
            let mut order = lock(&local.order);
            match (order.next, order.early.keys().next()) {
                (Some(next), Some(&first)) if first > next => Some((next.prev(), first)),
                _ => {
                    order.repairing = false;
                    None
                }
            }
        };
        let Some((after, until)) = gap else { return };
        let missing = u32::try_from(until.get() - after.get() - 1).unwrap_or(u32::MAX);
        let fetched = self.backfill.events_after(room, after, missing).await;
        let mut order = lock(&local.order);
        match fetched {
            Ok(envelopes) => {
                tracing::debug!(%room, %after, count = envelopes.len(), "gap filled from storage");
                for env in envelopes {
                    if let Some(seq) = env.seq() {
                        order.early.entry(seq).or_insert(env);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, %room, "gap backfill failed; will retry"),
        }
        order.repairing = false;
        self.release(room, &local, &mut order);
    }
}

impl Inbox for LocalRooms {
    fn resync(&self, room: RoomId) {
        let Some(local) = self.room(room) else { return };
        let mut order = lock(&local.order);
        self.start_resync(room, &mut order);
    }

    fn deliver(&self, room: RoomId, envelope: Envelope) {
        let Some(local) = self.room(room) else { return };
        if let Envelope::Presence(notice) = envelope {
            if notice.node == self.node {
                return;
            }
            let expires = Instant::now() + self.config.presence.ttl;
            let changes = lock(&local.presence).apply(notice, expires, false);
            for change in changes {
                let _ = local.ephemeral.send(Arc::new(transition_envelope(change)));
            }
            return;
        }
        if let Envelope::Ephemeral { .. } = envelope {
            let _ = local.ephemeral.send(Arc::new(envelope));
            return;
        }
        match envelope.seq() {
            None => {
                let _ = local.tx.send(Arc::new(envelope));
            }
            Some(seq) => {
                let mut order = lock(&local.order);
                match order.next {
                    Some(next) if seq == next && order.early.is_empty() => {
                        // The hot path: in order, nothing waiting.
                        let _ = local.tx.send(Arc::new(envelope));
                        order.next = Some(next.next());
                    }
                    Some(next) if seq < next => {} // already sent
                    _ => {
                        order.early.insert(seq, envelope);
                        self.release(room, &local, &mut order);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    /// The resync state machine, step by step: one task at a time, none
    /// before the position is known, one more pass when asked meanwhile.
    #[test]
    fn a_resync_waits_for_the_position_and_runs_once_more_when_asked_again() {
        let mut order = Sequencer::default();
        assert!(
            !order.ask_resync(),
            "no position yet: nothing to fetch after"
        );
        assert_eq!(order.resync, Resync::Wanted);
        assert!(
            order.position_known(Seq::new(5)),
            "the wanted resync starts"
        );
        assert_eq!(order.resync, Resync::Running);
        assert!(!order.ask_resync(), "one task at a time");
        assert_eq!(order.resync, Resync::Again);
        assert!(!order.ask_resync(), "asking twice is asking once");
        assert!(order.resync_pass_done(), "one more pass");
        assert_eq!(order.resync, Resync::Running);
        assert!(!order.resync_pass_done(), "then done");
        assert_eq!(order.resync, Resync::Idle);
        assert!(order.ask_resync(), "a new one starts at once");
        order.resync_given_up();
        assert_eq!(order.resync, Resync::Idle);
        let mut fresh = Sequencer::default();
        assert!(!fresh.position_known(Seq::new(1)), "nothing was wanted");
        assert_eq!(fresh.resync, Resync::Idle);
    }
    use super::*;
    use crate::InMemoryBus;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A storage stand-in holding every event it was told about.
    #[derive(Default)]
    struct Stored {
        events: Mutex<Vec<Envelope>>,
        fetches: AtomicU64,
    }

    #[async_trait]
    impl Backfill for Stored {
        async fn last_seq(&self, _room: RoomId) -> Result<Seq, BroadcastError> {
            Ok(Seq::new(lock(&self.events).len() as u64))
        }
        async fn events_after(
            &self,
            _room: RoomId,
            after: Seq,
            limit: u32,
        ) -> Result<Vec<Envelope>, BroadcastError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Ok(lock(&self.events)
                .iter()
                .skip(after.get() as usize)
                .take(limit as usize)
                .cloned()
                .collect())
        }
    }

    impl Stored {
        fn store(&self, text: &str) -> Envelope {
            let mut events = lock(&self.events);
            let env = Envelope::Event {
                seq: Seq::new(events.len() as u64 + 1),
                frame: Bytes::from(text.to_owned()),
            };
            events.push(env.clone());
            env
        }
    }

    fn hub(bus: &InMemoryBus, stored: &Arc<Stored>, gap: Duration) -> Hub {
        let builder = Hub::builder(
            HubConfig {
                room_capacity: 64,
                gap_timeout: gap,
                ..HubConfig::default()
            },
            stored.clone(),
        );
        let layer = bus.node(builder.inbox());
        builder.build(Arc::new(layer))
    }

    async fn next_seq(feed: &mut RoomFeed) -> Seq {
        match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
            Ok(Ok(env)) => env.seq().expect("a stored event"),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn early_events_wait_for_the_ones_before_them() {
        let stored = Arc::new(Stored::default());
        let hub = hub(&InMemoryBus::new(), &stored, Duration::from_secs(30));
        let room = RoomId::new();
        let mut feed = hub.join(room).await.expect("join");
        let (one, two, three) = (stored.store("1"), stored.store("2"), stored.store("3"));
        for env in [three, one.clone(), two, one] {
            hub.publish(room, env).await.expect("publish");
        }
        assert_eq!(
            [
                next_seq(&mut feed).await,
                next_seq(&mut feed).await,
                next_seq(&mut feed).await
            ],
            [1, 2, 3]
        );
        assert!(
            matches!(feed.try_recv(), Ok(None)),
            "the duplicate of 1 was dropped"
        );
        assert_eq!(
            stored.fetches.load(Ordering::SeqCst),
            0,
            "no storage round trip"
        );
    }

    #[tokio::test]
    async fn a_gap_that_stays_open_is_filled_from_storage() {
        let stored = Arc::new(Stored::default());
        let hub = hub(&InMemoryBus::new(), &stored, Duration::from_millis(20));
        let room = RoomId::new();
        let mut feed = hub.join(room).await.expect("join");
        let _lost = stored.store("published by a node that died");
        let second = stored.store("2");
        hub.publish(room, second).await.expect("publish");
        assert_eq!(next_seq(&mut feed).await, 1);
        assert_eq!(next_seq(&mut feed).await, 2);
        assert_eq!(stored.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_room_starts_after_what_storage_already_holds() {
        let stored = Arc::new(Stored::default());
        stored.store("old");
        let hub = hub(&InMemoryBus::new(), &stored, Duration::from_secs(30));
        let room = RoomId::new();
        let mut feed = hub.join(room).await.expect("join");
        let late_old = lock(&stored.events)[0].clone();
        hub.publish(room, late_old).await.expect("publish");
        hub.publish(room, stored.store("new"))
            .await
            .expect("publish");
        assert_eq!(next_seq(&mut feed).await, 2);
    }

    #[tokio::test]
    async fn nodes_on_one_bus_each_deliver_once() {
        let bus = InMemoryBus::new();
        let stored = Arc::new(Stored::default());
        let (a, b) = (
            hub(&bus, &stored, Duration::from_secs(30)),
            hub(&bus, &stored, Duration::from_secs(30)),
        );
        let room = RoomId::new();
        let mut on_a = a.join(room).await.expect("join");
        let mut on_b = b.join(room).await.expect("join");
        let mut on_b2 = b.join(room).await.expect("join");
        a.publish(room, stored.store("x")).await.expect("publish");
        for feed in [&mut on_a, &mut on_b, &mut on_b2] {
            assert_eq!(next_seq(feed).await, 1);
            assert!(matches!(feed.try_recv(), Ok(None)), "delivered once");
        }
        assert_eq!(b.local_rooms(), 1);
        b.leave(on_b).await;
        assert_eq!(b.local_rooms(), 1, "another local socket still reads it");
        b.leave(on_b2).await;
        assert_eq!(b.local_rooms(), 0);
        // b unsubscribed: publishing from a reaches only a.
        a.publish(room, stored.store("y")).await.expect("publish");
        assert_eq!(next_seq(&mut on_a).await, 2);
    }

    #[tokio::test]
    async fn a_resync_delivers_what_was_stored_meanwhile_once_and_in_order() {
        let stored = Arc::new(Stored::default());
        let hub = hub(&InMemoryBus::new(), &stored, Duration::from_secs(30));
        let room = RoomId::new();
        let mut feed = hub.join(room).await.expect("join");
        let first = stored.store("seen live");
        hub.publish(room, first.clone()).await.expect("publish");
        assert_eq!(next_seq(&mut feed).await, 1);
        // Two events whose publications were lost, and no newer one.
        let (two, three) = (stored.store("lost 2"), stored.store("lost 3"));
        hub.local.resync(room);
        assert_eq!(next_seq(&mut feed).await, 2);
        assert_eq!(next_seq(&mut feed).await, 3);
        // The lost publications turn up late after all: dropped.
        for env in [two, first, three] {
            hub.local.deliver(room, env);
        }
        hub.publish(room, stored.store("4")).await.expect("publish");
        assert_eq!(next_seq(&mut feed).await, 4);
        assert!(matches!(feed.try_recv(), Ok(None)), "nothing twice");
    }

    #[tokio::test]
    async fn a_resync_asked_for_while_joining_runs_once_the_position_is_known() {
        let stored = Arc::new(Stored::default());
        let hub = hub(&InMemoryBus::new(), &stored, Duration::from_secs(30));
        let room = RoomId::new();
        // What `join` does, with the layer's resync arriving in between.
        let mut feed = hub.local.insert(room);
        hub.local.resync(room);
        stored.store("stored after the position was read");
        hub.local.start_at(room, Seq::new(1));
        assert_eq!(next_seq(&mut feed).await, 1);
    }

    #[tokio::test]
    async fn a_slow_reader_lags_instead_of_holding_the_room() {
        let stored = Arc::new(Stored::default());
        let hub = hub(&InMemoryBus::new(), &stored, Duration::from_secs(30));
        let room = RoomId::new();
        let mut slow = hub.join(room).await.expect("join");
        for i in 0..100 {
            hub.publish(room, stored.store(&i.to_string()))
                .await
                .expect("publish");
        }
        assert!(matches!(slow.recv().await, Err(FeedError::Lagged(_))));
    }

    fn fast_presence_hub(bus: &InMemoryBus, stored: &Arc<Stored>) -> Hub {
        let builder = Hub::builder(
            HubConfig {
                ephemeral_capacity: 8,
                presence: PresenceTiming {
                    grace: Duration::from_millis(100),
                    heartbeat: Duration::from_millis(100),
                    ttl: Duration::from_millis(400),
                },
                ..HubConfig::default()
            },
            stored.clone(),
        );
        let layer = bus.node(builder.inbox());
        builder.build(Arc::new(layer))
    }

    fn name(s: &str) -> Username {
        Username::parse(s).expect("name")
    }

    /// The next ephemeral frame, as text.
    async fn next_frame(feed: &mut RoomFeed) -> String {
        match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
            Ok(Ok(Envelope::Ephemeral { frame, .. })) => {
                String::from_utf8(frame.to_vec()).expect("utf-8")
            }
            other => panic!("expected an ephemeral frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn ephemeral_events_skip_their_sender_and_never_lag_a_reader_out() {
        let stored = Arc::new(Stored::default());
        let hub = fast_presence_hub(&InMemoryBus::new(), &stored);
        let room = RoomId::new();
        let (alice, bob) = (UserId::new(), UserId::new());
        let mut from_alice = hub.join(room).await.expect("join");
        hub.arrive(&mut from_alice, alice, &name("alice")).await;
        let mut to_bob = hub.join(room).await.expect("join");
        hub.arrive(&mut to_bob, bob, &name("bob")).await;
        assert_eq!(
            next_frame(&mut from_alice).await,
            r#"{"type":"chat_event","action":"join","user":"bob"}"#
        );
        for _ in 0..1000 {
            hub.publish(
                room,
                Envelope::Ephemeral {
                    frame: Bytes::from_static(b"typing"),
                    from: Some(alice),
                },
            )
            .await
            .expect("publish");
        }
        hub.publish(room, stored.store("stored"))
            .await
            .expect("publish");
        // Stored events come first and are never lost; the typing storm is
        // skipped down to the last few, with the presence list in its place.
        assert_eq!(next_seq(&mut to_bob).await, 1);
        assert_eq!(
            next_frame(&mut to_bob).await,
            r#"{"type":"chat_event","action":"presence","users":["alice","bob"]}"#
        );
        let mut typing = 0;
        while let Ok(Some(envelope)) = to_bob.try_recv() {
            assert!(matches!(envelope, Envelope::Ephemeral { .. }));
            typing += 1;
        }
        assert!(typing <= 8, "at most the ephemeral capacity: {typing}");
        assert_eq!(next_seq(&mut from_alice).await, 1);
        while let Ok(Some(envelope)) = from_alice.try_recv() {
            let Envelope::Ephemeral { frame, .. } = envelope else {
                panic!("only ephemeral frames left")
            };
            assert_ne!(&frame[..], b"typing", "alice's own typing came back");
        }
    }

    #[tokio::test]
    async fn presence_spans_nodes_with_one_join_and_one_leave_per_user() {
        let bus = InMemoryBus::new();
        let stored = Arc::new(Stored::default());
        let (a, b) = (
            fast_presence_hub(&bus, &stored),
            fast_presence_hub(&bus, &stored),
        );
        let room = RoomId::new();
        let (alice, bob) = (UserId::new(), UserId::new());
        let mut alice_tab = a.join(room).await.expect("join");
        a.arrive(&mut alice_tab, alice, &name("alice")).await;
        let mut bob_on_b = b.join(room).await.expect("join");
        let Envelope::Ephemeral { frame, .. } = b.arrive(&mut bob_on_b, bob, &name("bob")).await
        else {
            panic!("a presence frame")
        };
        assert_eq!(
            &frame[..],
            br#"{"type":"chat_event","action":"presence","users":["alice","bob"]}"#
        );
        assert_eq!(
            next_frame(&mut alice_tab).await,
            r#"{"type":"chat_event","action":"join","user":"bob"}"#
        );
        // Bob's second tab, on node a: no join; closing one tab: no leave.
        let mut bob_on_a = a.join(room).await.expect("join");
        a.arrive(&mut bob_on_a, bob, &name("bob")).await;
        b.leave(bob_on_b).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            matches!(alice_tab.try_recv(), Ok(None)),
            "bob is still here"
        );
        assert_eq!(
            a.presence(room).await.expect("presence"),
            [name("alice"), name("bob")]
        );
        a.leave(bob_on_a).await;
        assert_eq!(
            next_frame(&mut alice_tab).await,
            r#"{"type":"chat_event","action":"leave","user":"bob"}"#
        );
        assert_eq!(a.presence(room).await.expect("presence"), [name("alice")]);
        // b serves nothing in the room any more: it reads the stored list.
        assert_eq!(b.local_rooms(), 0);
        assert_eq!(b.presence(room).await.expect("presence"), [name("alice")]);
    }

    #[tokio::test]
    async fn a_node_that_goes_silent_loses_its_users_after_the_ttl() {
        let bus = InMemoryBus::new();
        let stored = Arc::new(Stored::default());
        let a = fast_presence_hub(&bus, &stored);
        let room = RoomId::new();
        let mut watcher = a.join(room).await.expect("join");
        a.arrive(&mut watcher, UserId::new(), &name("alice")).await;
        // A node that announces bob, then dies without a goodbye.
        let dead = bus.node(Arc::new(crate::conformance::RecordingInbox::default()));
        let notice = PresenceNotice {
            node: Uuid::new_v4(),
            change: PresenceChange::Online {
                user: UserId::new(),
                name: name("bob"),
            },
        };
        dead.publish(room, Envelope::Presence(notice))
            .await
            .expect("publish");
        assert_eq!(
            next_frame(&mut watcher).await,
            r#"{"type":"chat_event","action":"join","user":"bob"}"#
        );
        let started = Instant::now();
        assert_eq!(
            next_frame(&mut watcher).await,
            r#"{"type":"chat_event","action":"leave","user":"bob"}"#
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
