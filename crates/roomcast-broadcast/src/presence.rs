//! Who is in a room, on every node: the state behind `presence`, `join` and
//! `leave` (PROTOCOL.md section 3).
//!
//! Each node counts its own sockets per user and room, and tells the other
//! nodes when a user appears on it or disappears from it (a
//! [`PresenceNotice`] through the room's channel: O(1) for every receiver,
//! whatever the room's size). Every node keeps a view of the other nodes'
//! users and derives `join` / `leave` for its own sockets from that view: a
//! user joins when they become present on any node, and leaves when they
//! are present on none.
//!
//! Self-healing: each node sends a snapshot of its users per room every
//! heartbeat, and stores it in the layer with a time to live (what a node
//! reads when it first serves a room). A node that stops sending (killed,
//! partitioned) expires from the others' views after the TTL, and its users
//! leave. A snapshot also repairs a view that missed a notice.
//!
//! Flapping: a user whose last socket on a node closes stays present for a
//! grace period; a socket that comes back (here or on another node) within
//! it produces neither `leave` nor `join`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use roomcast_domain::{UserId, Username};
use uuid::Uuid;

/// What a node says about its own users in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceNotice {
    /// The hub that speaks (not the layer's id: a node's presence outlives
    /// nothing, and the in-memory layer has no wire id).
    pub node: Uuid,
    pub change: PresenceChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user has a socket on this node now.
    Online { user: UserId, name: Username },
    /// The user has no socket on this node any more.
    Offline { user: UserId },
    /// Every user this node has in the room (its heartbeat).
    Snapshot { users: Vec<(UserId, Username)> },
}

/// Timing of presence.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTiming {
    /// How long a user whose last socket closed still counts as present.
    pub grace: Duration,
    /// How often a node re-sends (and re-stores) its snapshots.
    pub heartbeat: Duration,
    /// How long another node's snapshot counts without news from it.
    pub ttl: Duration,
}

impl Default for PresenceTiming {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(2),
            heartbeat: Duration::from_secs(3),
            ttl: Duration::from_secs(10),
        }
    }
}

/// A change every local socket of the room hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Join(UserId, Username),
    Leave(UserId, Username),
}

#[derive(Debug)]
struct Local {
    name: Username,
    sockets: usize,
    /// When the last socket closed (in grace until `grace` after it).
    empty_since: Option<Instant>,
}

#[derive(Debug)]
struct Remote {
    users: HashMap<UserId, Username>,
    expires: Instant,
}

/// One room's presence on one node.
#[derive(Debug, Default)]
pub(crate) struct RoomPresence {
    local: HashMap<UserId, Local>,
    remote: HashMap<Uuid, Remote>,
}

impl RoomPresence {
    fn is_present(&self, user: UserId) -> bool {
        self.local.contains_key(&user) || self.remote.values().any(|r| r.users.contains_key(&user))
    }

    /// Usernames present on any node, sorted, each once.
    pub fn users(&self) -> Vec<Username> {
        let names: BTreeSet<&Username> = self
            .local
            .values()
            .map(|l| &l.name)
            .chain(self.remote.values().flat_map(|r| r.users.values()))
            .collect();
        names.into_iter().cloned().collect()
    }

    /// This node's users (those in grace included): its snapshot.
    pub fn snapshot(&self) -> Vec<(UserId, Username)> {
        self.local
            .iter()
            .map(|(id, l)| (*id, l.name.clone()))
            .collect()
    }

    /// Whether this node has users here (sockets or graces pending).
    pub fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// A socket of `user` opened here. Returns (a `join` if the user was
    /// present nowhere, whether to tell the other nodes).
    pub fn arrive(&mut self, user: UserId, name: &Username) -> (Option<Transition>, bool) {
        let was_present = self.is_present(user);
        let local = self.local.entry(user).or_insert_with(|| Local {
            name: name.clone(),
            sockets: 0,
            empty_since: None,
        });
        let announce = local.sockets == 0 && local.empty_since.is_none();
        local.sockets += 1;
        local.empty_since = None;
        let join = (!was_present).then(|| Transition::Join(user, name.clone()));
        (join, announce)
    }

    /// A socket of `user` closed here; the user stays for the grace period.
    pub fn depart(&mut self, user: UserId, now: Instant) {
        if let Some(local) = self.local.get_mut(&user) {
            local.sockets = local.sockets.saturating_sub(1);
            if local.sockets == 0 {
                local.empty_since = Some(now);
            }
        }
    }

    /// Ends graces and expired nodes. Returns the users this node no longer
    /// has (to tell the others) and the `leave`s for local sockets.
    pub fn sweep(&mut self, now: Instant, grace: Duration) -> (Vec<UserId>, Vec<Transition>) {
        let gone: Vec<(UserId, Username)> = self
            .local
            .iter()
            .filter(|(_, l)| l.empty_since.is_some_and(|at| now >= at + grace))
            .map(|(id, l)| (*id, l.name.clone()))
            .collect();
        let mut leaves = Vec::new();
        let mut offline = Vec::new();
        for (user, name) in gone {
            self.local.remove(&user);
            offline.push(user);
            if !self.is_present(user) {
                leaves.push(Transition::Leave(user, name));
            }
        }
        let expired: Vec<Uuid> = self
            .remote
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(node, _)| *node)
            .collect();
        for node in expired {
            if let Some(remote) = self.remote.remove(&node) {
                for (user, name) in remote.users {
                    if !self.is_present(user) {
                        leaves.push(Transition::Leave(user, name));
                    }
                }
            }
        }
        (offline, leaves)
    }

    /// Applies another node's notice; returns the resulting `join`s and
    /// `leave`s. `merge_only`: a stored snapshot read at start, which may be
    /// older than notices already applied, so it adds and never removes.
    pub fn apply(
        &mut self,
        notice: PresenceNotice,
        expires: Instant,
        merge_only: bool,
    ) -> Vec<Transition> {
        let mut changes = Vec::new();
        match notice.change {
            PresenceChange::Online { user, name } => {
                if !self.is_present(user) {
                    changes.push(Transition::Join(user, name.clone()));
                }
                let remote = self.remote_mut(notice.node, expires);
                remote.users.insert(user, name);
            }
            PresenceChange::Offline { user } => {
                let remote = self.remote_mut(notice.node, expires);
                if let Some(name) = remote.users.remove(&user)
                    && !self.is_present(user)
                {
                    changes.push(Transition::Leave(user, name));
                }
            }
            PresenceChange::Snapshot { users } => {
                let fresh: HashMap<UserId, Username> = users.into_iter().collect();
                let old = if merge_only {
                    HashMap::new()
                } else {
                    std::mem::take(&mut self.remote_mut(notice.node, expires).users)
                };
                for (user, name) in &fresh {
                    if !old.contains_key(user) && !self.is_present(*user) {
                        changes.push(Transition::Join(*user, name.clone()));
                    }
                }
                let remote = self.remote_mut(notice.node, expires);
                remote.users.extend(fresh);
                for (user, name) in old {
                    if !self.is_present(user) {
                        changes.push(Transition::Leave(user, name));
                    }
                }
            }
        }
        changes
    }

    fn remote_mut(&mut self, node: Uuid, expires: Instant) -> &mut Remote {
        let remote = self.remote.entry(node).or_insert_with(|| Remote {
            users: HashMap::new(),
            expires,
        });
        remote.expires = remote.expires.max(expires);
        remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("name")
    }

    const GRACE: Duration = Duration::from_secs(2);

    #[test]
    fn two_tabs_join_once_and_leave_once_after_the_grace() {
        let mut room = RoomPresence::default();
        let alice = UserId::new();
        let t0 = Instant::now();
        assert_eq!(
            room.arrive(alice, &name("alice")),
            (Some(Transition::Join(alice, name("alice"))), true)
        );
        assert_eq!(room.arrive(alice, &name("alice")), (None, false));
        room.depart(alice, t0);
        assert!(room.sweep(t0 + GRACE, GRACE).1.is_empty(), "a tab is left");
        room.depart(alice, t0);
        assert_eq!(room.users(), vec![name("alice")], "in grace");
        assert!(room.sweep(t0 + GRACE / 2, GRACE).1.is_empty());
        assert_eq!(
            room.sweep(t0 + GRACE, GRACE),
            (vec![alice], vec![Transition::Leave(alice, name("alice"))])
        );
        assert!(room.users().is_empty());
    }

    #[test]
    fn a_socket_back_within_the_grace_is_neither_a_leave_nor_a_join() {
        let mut room = RoomPresence::default();
        let alice = UserId::new();
        let t0 = Instant::now();
        room.arrive(alice, &name("alice"));
        room.depart(alice, t0);
        assert_eq!(room.arrive(alice, &name("alice")), (None, false));
        assert_eq!(room.sweep(t0 + GRACE * 5, GRACE), (vec![], vec![]));
    }

    #[test]
    fn a_user_on_two_nodes_leaves_when_gone_from_both() {
        let mut room = RoomPresence::default();
        let (alice, other) = (UserId::new(), Uuid::new_v4());
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let online = PresenceNotice {
            node: other,
            change: PresenceChange::Online {
                user: alice,
                name: name("alice"),
            },
        };
        assert_eq!(
            room.apply(online, far, false),
            vec![Transition::Join(alice, name("alice"))]
        );
        assert_eq!(room.arrive(alice, &name("alice")), (None, true));
        room.depart(alice, t0);
        assert_eq!(room.sweep(t0 + GRACE, GRACE), (vec![alice], vec![]));
        let offline = PresenceNotice {
            node: other,
            change: PresenceChange::Offline { user: alice },
        };
        assert_eq!(
            room.apply(offline, far, false),
            vec![Transition::Leave(alice, name("alice"))]
        );
    }

    #[test]
    fn a_silent_node_expires_and_its_users_leave() {
        let mut room = RoomPresence::default();
        let (bob, dead) = (UserId::new(), Uuid::new_v4());
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let snapshot = PresenceNotice {
            node: dead,
            change: PresenceChange::Snapshot {
                users: vec![(bob, name("bob"))],
            },
        };
        assert_eq!(
            room.apply(snapshot, t0 + ttl, true),
            vec![Transition::Join(bob, name("bob"))]
        );
        assert!(room.sweep(t0 + ttl / 2, GRACE).1.is_empty());
        assert_eq!(
            room.sweep(t0 + ttl, GRACE).1,
            vec![Transition::Leave(bob, name("bob"))]
        );
    }

    #[test]
    fn a_snapshot_repairs_a_missed_notice() {
        let mut room = RoomPresence::default();
        let (bob, carol, node) = (UserId::new(), UserId::new(), Uuid::new_v4());
        let t = Instant::now() + Duration::from_secs(60);
        let snap = |users| PresenceNotice {
            node,
            change: PresenceChange::Snapshot { users },
        };
        room.apply(snap(vec![(bob, name("bob"))]), t, false);
        assert_eq!(
            room.apply(snap(vec![(carol, name("carol"))]), t, false),
            vec![
                Transition::Join(carol, name("carol")),
                Transition::Leave(bob, name("bob"))
            ]
        );
        assert_eq!(room.users(), vec![name("carol")]);
    }
}
