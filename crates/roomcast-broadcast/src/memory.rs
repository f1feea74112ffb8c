//! The in-process channel layer: the default for one node, and a stand-in
//! for Redis when tests run several nodes in one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_domain::RoomId;

use crate::{BroadcastError, ChannelLayer, Envelope, Inbox};

type NodeId = u64;
/// A node subscribed to a room, and where its deliveries go.
type Subscriber = (NodeId, Arc<dyn Inbox>);

/// A bus the nodes of one process share, as they would share a Redis.
#[derive(Clone, Default)]
pub struct InMemoryBus {
    inner: Arc<Mutex<BusState>>,
}

#[derive(Default)]
struct BusState {
    next_node: NodeId,
    rooms: HashMap<RoomId, Vec<Subscriber>>,
    /// Per room, per node: a state entry and when it expires.
    states: HashMap<RoomId, HashMap<NodeId, (Bytes, Instant)>>,
}

impl std::fmt::Debug for InMemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBus").finish_non_exhaustive()
    }
}

impl InMemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        // The bus holds no invariant a panicking holder could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A layer for one more node on this bus.
    pub fn node(&self, inbox: Arc<dyn Inbox>) -> InMemoryLayer {
        let mut state = self.lock();
        state.next_node += 1;
        InMemoryLayer {
            bus: self.clone(),
            node: state.next_node,
            inbox,
        }
    }
}

/// One node's view of an [`InMemoryBus`].
pub struct InMemoryLayer {
    bus: InMemoryBus,
    node: NodeId,
    inbox: Arc<dyn Inbox>,
}

impl std::fmt::Debug for InMemoryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryLayer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl InMemoryLayer {
    /// A layer for a node alone on its own bus: the single-process default.
    pub fn standalone(inbox: Arc<dyn Inbox>) -> Self {
        InMemoryBus::new().node(inbox)
    }
}

#[async_trait]
impl ChannelLayer for InMemoryLayer {
    async fn subscribe(&self, room: RoomId) -> Result<(), BroadcastError> {
        let mut state = self.bus.lock();
        let nodes = state.rooms.entry(room).or_default();
        if !nodes.iter().any(|(n, _)| *n == self.node) {
            nodes.push((self.node, self.inbox.clone()));
        }
        Ok(())
    }

    async fn unsubscribe(&self, room: RoomId) -> Result<(), BroadcastError> {
        let mut state = self.bus.lock();
        if let Some(nodes) = state.rooms.get_mut(&room) {
            nodes.retain(|(n, _)| *n != self.node);
            if nodes.is_empty() {
                state.rooms.remove(&room);
            }
        }
        Ok(())
    }

    async fn publish(&self, room: RoomId, envelope: Envelope) -> Result<(), BroadcastError> {
        // Copy the receivers out so no inbox runs under the bus lock.
        let targets: Vec<Arc<dyn Inbox>> = match self.bus.lock().rooms.get(&room) {
            Some(nodes) => nodes
                .iter()
                .filter(|(n, _)| *n != self.node)
                .map(|(_, inbox)| inbox.clone())
                .collect(),
            None => return Ok(()),
        };
        for inbox in targets {
            inbox.deliver(room, envelope.clone());
        }
        Ok(())
    }

    async fn put_state(
        &self,
        room: RoomId,
        state: Bytes,
        ttl: Duration,
    ) -> Result<(), BroadcastError> {
        let expires = Instant::now() + ttl;
        let mut bus = self.bus.lock();
        let entries = bus.states.entry(room).or_default();
        entries.insert(self.node, (state, expires));
        entries.retain(|_, (_, at)| *at > Instant::now());
        Ok(())
    }

    async fn states(&self, room: RoomId) -> Result<Vec<Bytes>, BroadcastError> {
        let now = Instant::now();
        Ok(self
            .bus
            .lock()
            .states
            .get(&room)
            .map(|entries| {
                entries
                    .values()
                    .filter(|(_, at)| *at > now)
                    .map(|(state, _)| state.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn clear_state(&self, room: RoomId) -> Result<(), BroadcastError> {
        let mut bus = self.bus.lock();
        if let Some(entries) = bus.states.get_mut(&room) {
            entries.remove(&self.node);
            if entries.is_empty() {
                bus.states.remove(&room);
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), BroadcastError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{LayerFactory, RecordingInbox};

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

    crate::layer_conformance_tests!(fresh());
}
