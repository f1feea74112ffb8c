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
use std::time::Duration;

use async_trait::async_trait;
use roomcast_domain::{RoomId, Seq, UserId};
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

use crate::{BroadcastError, ChannelLayer, Envelope, InMemoryLayer, Inbox};

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
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            room_capacity: 256,
            gap_timeout: Duration::from_millis(200),
        }
    }
}

/// Events fetched per storage round trip when a room resyncs.
const RESYNC_PAGE: u32 = 500;
/// Storage failures a resync tolerates (one `gap_timeout` apart) before it
/// gives up; the next event's gap repair then catches the room up.
const RESYNC_ATTEMPTS: u32 = 5;

/// A local socket's subscription to its room.
#[derive(Debug)]
pub struct RoomFeed {
    room: RoomId,
    rx: broadcast::Receiver<Slot>,
}

/// What a room channel holds: a pointer, not the envelope itself. Why:
/// tokio's broadcast channel allocates all `room_capacity` slots when the
/// room opens, so the slot size is paid 256 times per room (about 1.8 KB
/// per member of a 10-member room with an inline envelope, 0.7 KB boxed).
type Slot = Arc<Envelope>;

impl RoomFeed {
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// The next envelope. `Err(Lagged)` means this reader fell more than
    /// `room_capacity` behind and envelopes were dropped for it.
    pub async fn recv(&mut self) -> Result<Envelope, broadcast::error::RecvError> {
        self.rx.recv().await.map(Arc::unwrap_or_clone)
    }

    /// The next envelope if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<Envelope, broadcast::error::TryRecvError> {
        self.rx.try_recv().map(Arc::unwrap_or_clone)
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

    pub fn build(self, layer: Arc<dyn ChannelLayer>) -> Hub {
        Hub {
            local: self.local,
            layer,
            transitions: Arc::new(tokio::sync::Mutex::new(())),
        }
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
        match self.local.backfill.last_seq(room).await {
            Ok(last) => {
                self.local.start_at(room, last + 1);
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

    /// Ends a local socket's subscription; unsubscribes the node from the
    /// room's group when it was the last one.
    pub async fn leave(&self, feed: RoomFeed) {
        let room = feed.room;
        drop(feed);
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

    /// Ends the channel layer, then waits for pending gap repairs and
    /// resyncs to finish (on shutdown).
    pub async fn close(&self) {
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
}

struct LocalRoom {
    tx: broadcast::Sender<Slot>,
    order: Mutex<Sequencer>,
}

/// Puts one room's stored events in seq order.
#[derive(Default)]
struct Sequencer {
    /// The seq the room's sockets expect next; `None` until the room's
    /// position has been read from storage.
    next: Option<Seq>,
    /// Events that arrived before the ones they follow.
    early: BTreeMap<Seq, Envelope>,
    /// A repair task is watching this room's gap.
    repairing: bool,
    /// The layer asked for a resync before the room's position was known:
    /// run it as soon as it is.
    resync_wanted: bool,
    /// A resync task is fetching this room's stored events.
    resyncing: bool,
    /// Another resync was asked for while one ran: run once more, since
    /// the running one may have read storage before the loss.
    resync_again: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code holding these locks can leave them half-updated on panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        })
    }

    fn insert(&self, room: RoomId) -> RoomFeed {
        let (tx, rx) = broadcast::channel(self.config.room_capacity);
        let local = Arc::new(LocalRoom {
            tx,
            order: Mutex::new(Sequencer::default()),
        });
        self.lock().insert(room, local);
        RoomFeed { room, rx }
    }

    fn is_unused(&self, room: RoomId) -> bool {
        self.lock()
            .get(&room)
            .is_some_and(|r| r.tx.receiver_count() == 0)
    }

    /// Removes the room if no socket reads it (after dropping `feed`).
    fn remove_if_unused(&self, room: RoomId, feed: Option<RoomFeed>) -> bool {
        drop(feed);
        let mut rooms = self.lock();
        if rooms.get(&room).is_some_and(|r| r.tx.receiver_count() == 0) {
            rooms.remove(&room);
            return true;
        }
        false
    }

    fn start_at(&self, room: RoomId, next: Seq) {
        if let Some(local) = self.room(room) {
            let mut order = lock(&local.order);
            order.next = Some(next);
            self.release(room, &local, &mut order);
            if std::mem::take(&mut order.resync_wanted) {
                self.start_resync(room, &mut order);
            }
        }
    }

    /// Starts fetching the room's stored events after its position, unless
    /// a resync is already running (then that one runs once more).
    fn start_resync(&self, room: RoomId, order: &mut Sequencer) {
        if order.next.is_none() {
            order.resync_wanted = true;
        } else if order.resyncing {
            order.resync_again = true;
        } else if let Some(this) = self.me.upgrade() {
            order.resyncing = true;
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
                .events_after(room, next.saturating_sub(1), RESYNC_PAGE)
                .await;
            let mut order = lock(&local.order);
            match fetched {
                Ok(envelopes) => {
                    let full = envelopes.len() >= RESYNC_PAGE as usize;
                    tracing::debug!(%room, after = next - 1, count = envelopes.len(), "room resynced from storage");
                    for env in envelopes {
                        if let Some(seq) = env.seq() {
                            order.early.entry(seq).or_insert(env);
                        }
                    }
                    self.release(room, &local, &mut order);
                    if full || std::mem::take(&mut order.resync_again) {
                        continue;
                    }
                    order.resyncing = false;
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= RESYNC_ATTEMPTS {
                        tracing::warn!(error = %e, %room, "resync from storage failed; giving up until the next event");
                        order.resyncing = false;
                        order.resync_again = false;
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
                next += 1;
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
                (Some(next), Some(&first)) if first > next => Some((next - 1, first)),
                _ => {
                    order.repairing = false;
                    None
                }
            }
        };
        let Some((after, until)) = gap else { return };
        let missing = u32::try_from(until - after - 1).unwrap_or(u32::MAX);
        let fetched = self.backfill.events_after(room, after, missing).await;
        let mut order = lock(&local.order);
        match fetched {
            Ok(envelopes) => {
                tracing::debug!(%room, after, count = envelopes.len(), "gap filled from storage");
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
                        order.next = Some(next + 1);
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
            Ok(lock(&self.events).len() as Seq)
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
                .skip(after as usize)
                .take(limit as usize)
                .cloned()
                .collect())
        }
    }

    impl Stored {
        fn store(&self, text: &str) -> Envelope {
            let mut events = lock(&self.events);
            let env = Envelope::Event {
                seq: events.len() as Seq + 1,
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
        assert!(feed.try_recv().is_err(), "the duplicate of 1 was dropped");
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
            assert!(feed.try_recv().is_err(), "delivered once");
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
        assert!(feed.try_recv().is_err(), "nothing twice");
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
        hub.local.start_at(room, 1);
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
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
