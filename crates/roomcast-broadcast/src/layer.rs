//! The channel-layer trait: the swap point between nodes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_domain::RoomId;

use crate::{BroadcastError, Envelope};

/// Where a layer hands what it receives for the node's subscribed rooms.
/// Called from the layer's receiving task: must not block.
pub trait Inbox: Send + Sync + 'static {
    fn deliver(&self, room: RoomId, envelope: Envelope);

    /// The layer may have lost envelopes of `room` (it reconnected, its
    /// receive buffer overflowed, or a publisher reported unsent events):
    /// fetch what was stored meanwhile, so the room catches up even if no
    /// newer event arrives to reveal the gap. Must not block.
    ///
    /// The default does nothing, for inboxes that keep no order.
    fn resync(&self, room: RoomId) {
        let _ = room;
    }
}

/// Moves envelopes between the nodes serving a room. A layer is built for
/// one node, with that node's [`Inbox`].
///
/// Contract (checked by `conformance`, behind the `test-support` feature):
/// - after `subscribe(room)` returns, every envelope another node publishes
///   to `room` reaches this node's inbox, in that publisher's order;
/// - a node never receives its own publications (the [`crate::Hub`] delivers
///   those locally, so local sockets are served even when the layer is down);
/// - after `unsubscribe(room)` returns, nothing more arrives for `room`;
/// - room state: each node keeps one entry per room (opaque bytes, e.g. its
///   presence snapshot) that every node can read until its time to live
///   runs out, so a node that dies without a word disappears by itself.
#[async_trait]
pub trait ChannelLayer: Send + Sync + std::fmt::Debug + 'static {
    async fn subscribe(&self, room: RoomId) -> Result<(), BroadcastError>;
    async fn unsubscribe(&self, room: RoomId) -> Result<(), BroadcastError>;
    async fn publish(&self, room: RoomId, envelope: Envelope) -> Result<(), BroadcastError>;
    /// Sets this node's entry of `room`'s shared state, valid for `ttl`.
    async fn put_state(
        &self,
        room: RoomId,
        state: Bytes,
        ttl: Duration,
    ) -> Result<(), BroadcastError>;
    /// Every node's unexpired entry of `room`'s state (this node's too).
    async fn states(&self, room: RoomId) -> Result<Vec<Bytes>, BroadcastError>;
    /// Removes this node's entry of `room`'s state.
    async fn clear_state(&self, room: RoomId) -> Result<(), BroadcastError>;
    /// Cheap reachability check for readiness probes.
    async fn health(&self) -> Result<(), BroadcastError>;
    /// The layer's name for logs (`memory`, `redis`).
    fn name(&self) -> &'static str;
    /// Ends the layer's connections and background tasks (on shutdown).
    /// Nothing is delivered afterwards. The default has nothing to end.
    async fn close(&self) {}
}

impl<T: Inbox + ?Sized> Inbox for Arc<T> {
    fn deliver(&self, room: RoomId, envelope: Envelope) {
        (**self).deliver(room, envelope)
    }

    fn resync(&self, room: RoomId) {
        (**self).resync(room)
    }
}
