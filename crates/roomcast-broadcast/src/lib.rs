//! How a stored event reaches every socket of its room, on every node.
//!
//! Two levels, two types:
//! - [`ChannelLayer`] moves envelopes between server nodes (processes). It
//!   is the swap point: [`InMemoryLayer`] for one process (and tests),
//!   Redis for a fleet. A node subscribes once per room, however many of
//!   its sockets are in it, and a layer never echoes a publication back to
//!   the node that published it.
//! - [`Hub`] is a node's local fan-out: it joins the layer's room groups on
//!   behalf of the node's sockets, delivers each envelope once per room into
//!   a bounded in-process channel that every local socket of the room reads,
//!   and puts a room's stored events back in `seq` order (filling a gap from
//!   storage through [`Backfill`] when one does not close by itself).
//! - [`RedisLayer`] carries envelopes between nodes over Redis pub/sub,
//!   encoded as [`wire`] v1, and asks the hub to resync a room from storage
//!   ([`Inbox::resync`]) whenever it may have lost something. Given a
//!   `redis-cluster://` URL it uses Redis Cluster's sharded pub/sub instead
//!   (see `redis_cluster.rs`): each room on the shard that owns its slot.
//!
//! An envelope carries the frame already serialized: one serialization per
//! event, the same bytes for every socket.
//!
//! Invariant: this crate knows the domain and nothing of storage or HTTP.

#[cfg(feature = "test-support")]
pub mod conformance;
mod envelope;
mod error;
mod hub;
mod layer;
mod memory;
pub mod metrics;
pub mod presence;
mod redis;
mod redis_cluster;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod wire;

pub use envelope::Envelope;
pub use error::BroadcastError;
pub use hub::{Backfill, FeedError, Hub, HubBuilder, HubConfig, RoomFeed};
pub use layer::{ChannelLayer, Inbox};
pub use memory::{InMemoryBus, InMemoryLayer};
pub use redis::{RedisConfig, RedisLayer, RedisLayerError};
