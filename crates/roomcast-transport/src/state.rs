//! What every handler shares.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use roomcast_broadcast::Hub;
use roomcast_storage::Storage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::reads::Receipts;

/// Renders the metrics text for `/metrics`.
struct MetricsRenderer(Box<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRenderer")
    }
}
use crate::{JwtKeys, TransportConfig};

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
}

impl AppState {
    pub fn new(storage: Storage, hub: Hub, keys: JwtKeys, config: TransportConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                storage,
                hub,
                keys,
                config,
                connections: AtomicUsize::new(0),
                shutdown: CancellationToken::new(),
                sockets: TaskTracker::new(),
                metrics: OnceLock::new(),
                receipts: Receipts::default(),
            }),
        }
    }

    /// Serves `/metrics` with what `render` returns: the text exposition
    /// of the recorder the embedder installed behind the `metrics` facade
    /// (the binary's is Prometheus). The first one given wins.
    pub fn set_metrics(&self, render: impl Fn() -> String + Send + Sync + 'static) {
        let _ = self.inner.metrics.set(MetricsRenderer(Box::new(render)));
    }

    /// The `/metrics` text; empty when no recorder was given.
    pub(crate) fn render_metrics(&self) -> String {
        self.inner
            .metrics
            .get()
            .map(|render| (render.0)())
            .unwrap_or_default()
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

    /// Takes a connection slot, or `None` at the limit. The slot is given
    /// back when the returned guard drops.
    pub(crate) fn try_connect(&self) -> Option<ConnectionSlot> {
        let max = self.inner.config.max_connections;
        self.inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot {
                state: self.clone(),
            })
    }
}

/// One open (or opening) WebSocket's place under the connection limit.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    state: AppState,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.inner.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
