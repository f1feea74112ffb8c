//! What the Redis layer does differently on Redis Cluster: sharded pub/sub.
//!
//! Selected by a `redis-cluster://host:port,host:port` URL, everything else
//! is [`crate::RedisLayer`]'s (one copy of each rule: the wire format, the
//! stale notices, the resubscribe-then-resync repair, room state). Here:
//! - each room's channel is a shard channel (`SPUBLISH` / `SSUBSCRIBE`),
//!   living on the primary that owns the channel name's hash slot. No hash
//!   tag in the channel name, so rooms spread evenly over the shards;
//! - a room's state key carries the room's channel name as its hash tag, so
//!   it lives in the channel's slot and every command names one slot;
//! - fred's cluster client keeps one connection per primary, and routes
//!   each `SSUBSCRIBE` (grouped by slot: one command never crosses slots)
//!   to the owner of its slot, following `MOVED` / `ASK`;
//! - [`Shards`] remembers which primary each room was subscribed on. Redis
//!   drops a shard subscription when its slot leaves the node (resharding,
//!   a replica promoted), and fred swallows the `sunsubscribe` push that
//!   says so; so a watcher re-reads the routing table every
//!   `topology_interval`, and every room whose owner changed is subscribed
//!   again and resynced from storage, as after a reconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{Client, ClusterInterface};
use fred::types::config::Server;
use roomcast_domain::RoomId;
use tokio_util::sync::CancellationToken;

use crate::redis::{Shared, lock};

/// The URL scheme that selects cluster mode.
pub(crate) const SCHEME: &str = "redis-cluster://";

/// `redis-cluster://[user[:password]@]host:port[,host:port...]` in fred's
/// own syntax (`...@host:port?node=host:port&node=...`), or `None` if it
/// is not one. One node is enough to discover the cluster; more survive
/// that one being down at start.
pub(crate) fn fred_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix(SCHEME)?;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains(['/', '?', '#', '@']) {
        return None;
    }
    let mut nodes = hosts.split(',');
    let first = nodes.next().filter(|h| !h.is_empty())?;
    let mut out = format!("{SCHEME}{auth}{first}");
    for (i, node) in nodes.enumerate() {
        if node.is_empty() {
            return None;
        }
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str("node=");
        out.push_str(node);
    }
    Some(out)
}

/// A channel prefix must not steer the hash slot: braces in it would be a
/// hash tag, putting every room on one shard.
pub(crate) fn prefix_is_valid(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
}

/// The state key of the room whose channel is `channel`: in the channel's
/// hash slot (the channel name is its hash tag).
pub(crate) fn state_key(prefix: &str, room: RoomId, channel: &str) -> String {
    format!("{prefix}state:{room}:{{{channel}}}")
}

/// The hash slot of a channel (or key) name.
pub(crate) fn slot(name: &str) -> u16 {
    fred::util::redis_keyslot(name.as_bytes())
}

/// Which primary each live room is subscribed on, as far as this node
/// knows.
#[derive(Debug, Default)]
pub(crate) struct Shards {
    owners: Mutex<HashMap<RoomId, Server>>,
}

impl Shards {
    /// Subscribes `rooms` (channel names given by `channel`), one
    /// `SSUBSCRIBE` per slot, and records where each went. Returns the
    /// rooms subscribed, and the first error if some were not.
    pub(crate) async fn subscribe(
        &self,
        subscriber: &SubscriberClient,
        options: &fred::prelude::Options,
        rooms: &[RoomId],
        channel: impl Fn(RoomId) -> String,
    ) -> (Vec<RoomId>, Option<fred::error::Error>) {
        use fred::prelude::{ClientLike, PubsubInterface};
        let mut by_slot: HashMap<u16, Vec<(RoomId, String)>> = HashMap::new();
        for &room in rooms {
            let name = channel(room);
            by_slot.entry(slot(&name)).or_default().push((room, name));
        }
        let mut done = Vec::with_capacity(rooms.len());
        let mut error = None;
        for (slot, group) in by_slot {
            let names: Vec<String> = group.iter().map(|(_, n)| n.clone()).collect();
            match subscriber.with_options(options).ssubscribe(names).await {
                Ok(()) => {
                    // fred routed it by this table (updated on MOVED).
                    let owner = subscriber
                        .cached_cluster_state()
                        .and_then(|t| t.get_server(slot).cloned());
                    let mut owners = lock(&self.owners);
                    for (room, _) in group {
                        match &owner {
                            Some(server) => owners.insert(room, server.clone()),
                            None => owners.remove(&room),
                        };
                        done.push(room);
                    }
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        (done, error)
    }

    pub(crate) fn forget(&self, room: RoomId) {
        lock(&self.owners).remove(&room);
    }

    /// The rooms (among `live`) whose slot the routing table gives to
    /// another primary than the one they were subscribed on.
    fn moved(
        &self,
        table: &fred::types::cluster::ClusterRouting,
        channel: impl Fn(RoomId) -> String,
    ) -> Vec<RoomId> {
        lock(&self.owners)
            .iter()
            .filter(|(room, server)| table.get_server(slot(&channel(**room))) != Some(*server))
            .map(|(room, _)| *room)
            .collect()
    }
}

/// Refreshes the routing table every `every`; rooms whose owner changed
/// become pending, and pending rooms are subscribed again and resynced.
pub(crate) async fn watch_topology(
    shared: Arc<Shared>,
    publisher: Client,
    every: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) {
    use fred::prelude::ClientLike;
    let Some(shards) = shared.shards() else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Also moves the publisher's connections along.
        match tokio::time::timeout(timeout, publisher.sync_cluster()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster routing table not refreshed");
                continue;
            }
            Err(_) => continue,
        }
        let Some(table) = publisher.cached_cluster_state() else {
            continue;
        };
        let moved = shards.moved(&table, |room| shared.channel(room));
        if !moved.is_empty() {
            tracing::info!(
                rooms = moved.len(),
                "rooms changed shard (resharding or failover); resubscribing"
            );
            let subscriber = shared.subscriber();
            if let Ok(Err(e)) = tokio::time::timeout(timeout, subscriber.sync_cluster()).await {
                tracing::debug!(error = %e, "subscriber routing table not refreshed");
            }
            shared.mark_pending(&moved);
        }
        if shared.has_pending() && shared.subscriber().is_connected() {
            shared.settle().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_fred_urls() {
        let ok = [
            ("redis-cluster://h:1", "redis-cluster://h:1"),
            ("redis-cluster://h:1/", "redis-cluster://h:1"),
            (
                "redis-cluster://h:1,i:2,j:3",
                "redis-cluster://h:1?node=i:2&node=j:3",
            ),
            (
                "redis-cluster://u:p@h:1,i:2",
                "redis-cluster://u:p@h:1?node=i:2",
            ),
        ];
        for (url, fred) in ok {
            assert_eq!(fred_url(url).as_deref(), Some(fred), "{url}");
        }
        for bad in [
            "redis://h:1",
            "redis-cluster://",
            "redis-cluster://h:1,,i:2",
            "redis-cluster://h:1,",
            "redis-cluster://h:1/0",
            "redis-cluster://h:1?node=i:2",
        ] {
            assert_eq!(fred_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_rooms_state_key_shares_its_channels_slot_and_rooms_spread() {
        let mut slots = std::collections::HashSet::new();
        for _ in 0..64 {
            let room = RoomId::new();
            let channel = format!("p:room:{room}");
            assert_eq!(slot(&state_key("p:", room, &channel)), slot(&channel));
            slots.insert(slot(&channel));
        }
        // Not one tag for all: 64 rooms land on (nearly) 64 slots.
        assert!(slots.len() > 60, "{}", slots.len());
        assert!(prefix_is_valid("roomcast:"));
        assert!(!prefix_is_valid("{roomcast}:"));
    }
}
