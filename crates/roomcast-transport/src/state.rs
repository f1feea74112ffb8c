//! What every handler shares.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use roomcast_broadcast::Hub;
use roomcast_domain::UserId;
use roomcast_storage::Storage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::UserLimits;
use crate::password::PasswordGate;
use crate::reads::Receipts;
use crate::sessions::Sessions;
use crate::throttle::Throttle;
use crate::{JwtKeys, TransportConfig};

/// Renders the metrics text for `/metrics`.
struct MetricsRenderer(Box<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRenderer")
    }
}

/// The server's shared state: storage, the node's hub, keys and settings,
/// plus the bookkeeping that lets shutdown find every socket.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    hub: Hub,
    keys: JwtKeys,
    config: TransportConfig,
    connections: AtomicUsize,
    /// Cancelled when the server starts shutting down: every socket closes.
    shutdown: CancellationToken,
    /// Every socket task, so shutdown can wait for them to finish.
    sockets: TaskTracker,
    /// Renders `/metrics`, when the embedder installed a recorder.
    metrics: OnceLock<MetricsRenderer>,
    /// Read receipts waiting out their coalescing interval.
    receipts: Receipts,
    /// Per-user message and typing limits.
    limits: UserLimits,
    /// Bounds concurrent password hashing.
    passwords: PasswordGate,
    /// Log-in and sign-up throttling.
    throttle: Throttle,
    /// Open sockets per user on this node (users with none are absent).
    user_connections: DashMap<UserId, usize>,
    /// Logged-out sessions and the sockets of live ones.
    sessions: Sessions,
}

impl AppState {
    pub fn new(storage: Storage, hub: Hub, keys: JwtKeys, config: TransportConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                storage,
                hub,
                keys,
                connections: AtomicUsize::new(0),
                shutdown: CancellationToken::new(),
                sockets: TaskTracker::new(),
                metrics: OnceLock::new(),
                receipts: Receipts::default(),
                limits: UserLimits::new(&config.rate_limit),
                passwords: PasswordGate::new(
                    config.password_concurrency,
                    config.password_queue_timeout,
                ),
                throttle: Throttle::default(),
                user_connections: DashMap::new(),
                sessions: Sessions::default(),
                config,
            }),
        }
    }

    /// Serves `/metrics` with what `render` returns: the text exposition
    /// of the recorder the embedder installed behind the `metrics` facade
    /// (the binary's is Prometheus). The first one given wins.
    pub fn set_metrics(&self, render: impl Fn() -> String + Send + Sync + 'static) {
        let _ = self.inner.metrics.set(MetricsRenderer(Box::new(render)));
        crate::metrics::register();
    }

    /// The `/metrics` text; empty when no recorder was given.
    pub(crate) fn render_metrics(&self) -> String {
        self.inner
            .metrics
            .get()
            .map(|render| (render.0)())
            .unwrap_or_default()
    }

    /// Posts, edits and deletes messages as any user: stored, then
    /// broadcast, exactly as the HTTP API and the sockets do.
    pub fn publisher(&self) -> crate::Publisher {
        crate::Publisher::new(self.clone())
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn keys(&self) -> &JwtKeys {
        &self.inner.keys
    }

    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Open WebSocket connections on this node.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn sockets(&self) -> &TaskTracker {
        &self.inner.sockets
    }

    pub(crate) fn receipts(&self) -> &Receipts {
        &self.inner.receipts
    }

    pub(crate) fn limits(&self) -> &UserLimits {
        &self.inner.limits
    }

    pub(crate) fn passwords(&self) -> &PasswordGate {
        &self.inner.passwords
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Takes a connection slot for `user`, or says which limit is reached.
    /// The slot is given back when the returned guard drops.
    pub(crate) fn try_connect(&self, user: UserId) -> Result<ConnectionSlot, ConnectLimit> {
        let per_user = self.inner.config.max_connections_per_user;
        if per_user > 0 {
            // The map's shard lock is held only for this update.
            let mut mine = self.inner.user_connections.entry(user).or_insert(0);
            if *mine >= per_user {
                return Err(ConnectLimit::User);
            }
            *mine += 1;
            drop(mine);
        }
        let max = self.inner.config.max_connections;
        let node = self
            .inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        let slot = ConnectionSlot {
            state: self.clone(),
            user: (per_user > 0).then_some(user),
            counted: node.is_ok(),
        };
        match node {
            Ok(_) => Ok(slot),
            Err(_) => Err(ConnectLimit::Node), // the slot's drop gives the user's back
        }
    }
}

/// Which connection limit refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectLimit {
    /// The node's (503).
    Node,
    /// The user's own (429).
    User,
}

/// One open (or opening) WebSocket's place under the connection limits.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    state: AppState,
    /// Counted against this user's cap (none when the cap is off).
    user: Option<UserId>,
    /// Counted against the node's cap.
    counted: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.counted {
            self.state.inner.connections.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(user) = self.user {
            self.state
                .inner
                .user_connections
                .remove_if_mut(&user, |_, n| {
                    *n = n.saturating_sub(1);
                    *n == 0
                });
        }
    }
}
