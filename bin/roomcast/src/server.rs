//! Starting and stopping a Roomcast node from its settings.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use anyhow::Context;
use roomcast_broadcast::{Hub, HubConfig, RedisConfig, RedisLayer};
use roomcast_storage::{CommitPolicy, Retention, Storage};
use roomcast_transport::{
    AllowedOrigins, AppState, JwtKeys, RateLimitConfig, ShutdownMode, TransportConfig,
};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::{CommonArgs, ServeArgs, ShutdownModeArg};
use crate::secret;

/// Opens (creating and migrating) the storage the settings name, with as
/// many PostgreSQL writers as they ask for.
pub async fn open_storage(common: &CommonArgs) -> anyhow::Result<Storage> {
    let policy = CommitPolicy {
        writers: common.database_writers.max(1),
        ..CommitPolicy::default()
    };
    open_storage_with(
        &common.data_dir,
        &common.database_url(),
        common.database_read_url.as_deref(),
        policy,
    )
    .await
}

/// Opens (creating and migrating) the database at `url`; an SQLite one
/// gets its data directory created first.
pub async fn open_storage_at(data_dir: &std::path::Path, url: &str) -> anyhow::Result<Storage> {
    open_storage_with(data_dir, url, None, CommitPolicy::default()).await
}

async fn open_storage_with(
    data_dir: &std::path::Path,
    url: &str,
    read_url: Option<&str>,
    policy: CommitPolicy,
) -> anyhow::Result<Storage> {
    if url.starts_with("sqlite:") {
        crate::private_files::data_dir(data_dir)?;
        // The default database file is made private before SQLite creates it.
        let default_file = data_dir.join("roomcast.db");
        if url == format!("sqlite://{}", default_file.display()) {
            crate::private_files::database_file(&default_file)?;
        }
    }
    let replica = read_url.map(redact);
    roomcast_storage::connect_with_replica(url, read_url, policy)
        .await
        .with_context(|| match &replica {
            Some(replica) => format!(
                "opening the database {} with the read replica {replica}",
                redact(url)
            ),
            None => format!("opening the database {}", redact(url)),
        })
}

/// The WebSocket cap when none is configured: the descriptor limit (raised
/// to its hard limit first) less what HTTP connections, the database, Redis
/// and the process itself need.
fn default_max_connections() -> usize {
    const RESERVED: u64 = 256;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
            1024
        }
    };
    // Nine tenths of what is left: HTTP requests come and go beside sockets.
    let sockets = limit.saturating_sub(RESERVED) / 10 * 9;
    let cap = usize::try_from(sockets)
        .unwrap_or(usize::MAX)
        .clamp(16, 1_000_000);
    tracing::info!(
        nofile = limit,
        max_connections = cap,
        "connection cap from the descriptor limit"
    );
    cap
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The node's hub on the channel layer the settings name: Redis for a
/// fleet, or in-memory for a node alone.
async fn build_hub(args: &ServeArgs, storage: &Storage) -> anyhow::Result<Hub> {
    let builder = roomcast_transport::hub_builder(storage, HubConfig::default());
    let Some(url) = &args.redis_url else {
        return Ok(builder.standalone());
    };
    let mut config = RedisConfig::new(url.clone());
    config.channel_prefix = args.redis_prefix.clone();
    config.wait = args.redis_wait;
    let layer = RedisLayer::connect(config, builder.inbox())
        .await
        .with_context(|| {
            format!(
                "cannot use Redis at {} (start it, fix REDIS_URL, or pass --redis-wait to start without it)",
                redact(url)
            )
        })?;
    if args.redis_wait {
        tracing::info!(url = %redact(url), "Redis channel layer (connecting in the background if down)");
    }
    Ok(builder.build(Arc::new(layer)))
}

/// A running node.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The `/metrics` listener's address and task, with `--metrics-bind`;
    /// it stops with the server.
    metrics: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    /// The event-log pruning task, when retention is configured; stops
    /// when the server is dropped.
    _retention: Option<Retention>,
}

impl Server {
    /// Opens storage, builds the node and starts serving on the configured
    /// address (port 0 picks a free one).
    pub async fn start(args: &ServeArgs) -> anyhow::Result<Self> {
        let storage = open_storage(&args.common).await?;
        let secret =
            secret::load_or_create(args.common.jwt_secret.as_deref(), &args.common.data_dir)?;
        let listener = TcpListener::bind(args.common.bind)
            .await
            .with_context(|| format!("binding {}", args.common.bind))?;
        let addr = listener.local_addr()?;
        let hub = build_hub(args, &storage).await?;
        let config = TransportConfig {
            allowed_origins: allowed_origins(&args.allowed_origins, addr),
            max_connections: args.max_connections.unwrap_or_else(default_max_connections),
            max_connections_per_user: args.max_connections_per_user,
            shutdown_mode: match args.shutdown_mode {
                ShutdownModeArg::Frame => ShutdownMode::Frame,
                ShutdownModeArg::Drop => ShutdownMode::Drop,
            },
            access_token_ttl: std::time::Duration::from_secs(args.access_token_ttl.max(1)),
            secure_cookies: args.secure_cookies,
            write_timeout: std::time::Duration::from_millis(args.write_timeout_ms.max(1)),
            tcp_send_buffer_bytes: args.tcp_send_buffer,
            rate_limit: RateLimitConfig {
                per_second: args.rate_limit,
                burst: args.rate_burst.max(1),
                typing_interval: Duration::from_millis(args.typing_interval_ms),
                abuse_after: Duration::from_secs(args.abuse_close_secs),
            },
            header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
            cors_origins: args
                .cors_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            public_metrics: args.metrics_bind.is_none(),
            ..TransportConfig::default()
        };
        let config = TransportConfig {
            password_concurrency: args
                .password_concurrency
                .unwrap_or(config.password_concurrency)
                .max(1),
            ..config
        };
        tracing::info!(
            storage = storage.backend(),
            layer = hub.layer().name(),
            origins = %config.allowed_origins,
            "starting (more WebSocket origins: --allowed-origins or ROOMCAST_ALLOWED_ORIGINS)"
        );
        let state = AppState::new(storage, hub, JwtKeys::new(&secret), config);
        if let Some(handle) = prometheus() {
            state.set_metrics(move || handle.render());
        }
        let metrics = match args.metrics_bind {
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding {bind} (--metrics-bind)"))?;
                let addr = listener.local_addr()?;
                tracing::info!(%addr, "serving /metrics on its own listener");
                let task = tokio::spawn(roomcast_transport::serve_metrics(listener, state.clone()));
                Some((addr, task))
            }
            None => None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let retention = args.event_retention_days.map(|days| {
            let keep = std::time::Duration::from_secs(u64::from(days) * 24 * 3600);
            Retention::start(state.storage().clone(), keep)
        });
        let task = tokio::spawn(roomcast_transport::serve(
            listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task,
            metrics,
            _retention: retention,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when `--metrics-bind` gave it a listener
    /// of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// The address a person opens in a browser to chat (the web client).
    pub fn browser_url(&self) -> String {
        format!("http://{}/", public_addr(self.addr))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, closes every socket, and waits for the server to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits for the server to end (after `shutdown`, or a fatal error);
    /// the retention task stops with it.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self
            .task
            .await
            .context("server task panicked")?
            .context("server failed");
        if let Some((_, task)) = self.metrics {
            // It ends once the server has (their shutdown signal is one).
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "metrics listener failed"),
                Err(e) => tracing::warn!(error = %e, "metrics listener panicked"),
            }
        }
        served
    }
}

/// The process's Prometheus recorder, installed on first use. The
/// `metrics` facade is process-wide by design, so every node started in one
/// process (tests) shares it; `None` if another recorder was installed.
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Histograms (aggregatable across nodes), not summaries.
            let builder = || {
                let mut builder = PrometheusBuilder::new()
                    .set_buckets(roomcast_transport::metrics::LATENCY_BUCKETS)?;
                for name in roomcast_transport::metrics::size_histograms() {
                    builder = builder.set_buckets_for_metric(
                        Matcher::Full(name.to_owned()),
                        roomcast_transport::metrics::SIZE_BUCKETS,
                    )?;
                }
                builder.install_recorder()
            };
            match builder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                None
            }
            }
        })
        .clone()
}

/// The origins allowed to open sockets: as configured, or the server's own.
fn allowed_origins(configured: &[String], addr: SocketAddr) -> AllowedOrigins {
    let configured: Vec<String> = configured
        .iter()
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if configured.iter().any(|o| o == "*") {
        return AllowedOrigins::Any;
    }
    if !configured.is_empty() {
        return AllowedOrigins::List(configured);
    }
    let port = addr.port();
    let mut own = vec![format!("http://{}", public_addr(addr))];
    let mut add = |origin: String| {
        if !own.contains(&origin) {
            own.push(origin);
        }
    };
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        add(format!("http://localhost:{port}"));
        add(format!("http://127.0.0.1:{port}"));
    }
    // A wildcard bind is reached by the machine's name and addresses too:
    // a browser that uses them must not get 403.
    if addr.ip().is_unspecified() {
        for host in machine_hosts() {
            add(format!("http://{host}:{port}"));
        }
    }
    AllowedOrigins::List(own)
}

/// The machine's name and its non-loopback addresses, as URL hosts: the
/// addresses its name resolves to, and the one it routes out from (a
/// connected UDP socket's local address; no packet is sent).
fn machine_hosts() -> Vec<String> {
    use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
    let mut ips: Vec<IpAddr> = Vec::new();
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if let Some(name) = &name
        && let Ok(addrs) = (name.as_str(), 0).to_socket_addrs()
    {
        ips.extend(addrs.map(|a| a.ip()));
    }
    for (bind, probe) in [("0.0.0.0:0", "192.0.2.1:9"), ("[::]:0", "[2001:db8::1]:9")] {
        if let Ok(socket) = UdpSocket::bind(bind)
            && socket.connect(probe).is_ok()
            && let Ok(local) = socket.local_addr()
        {
            ips.push(local.ip());
        }
    }
    let mut hosts: Vec<String> = name.into_iter().collect();
    for ip in ips {
        if ip.is_loopback() || ip.is_unspecified() {
            continue;
        }
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// The address clients use: an unspecified bind address means loopback.
pub(crate) fn public_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_origin_is_the_servers_own() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let AllowedOrigins::List(list) = allowed_origins(&[], addr) else {
            panic!("expected a list")
        };
        assert!(list.contains(&"http://127.0.0.1:8080".to_owned()));
        assert!(list.contains(&"http://localhost:8080".to_owned()));
        for host in machine_hosts() {
            assert!(list.contains(&format!("http://{host}:8080")), "{host}");
        }
        let AllowedOrigins::List(loopback) =
            allowed_origins(&[], "127.0.0.1:8080".parse().expect("addr"))
        else {
            panic!("expected a list")
        };
        assert_eq!(loopback.len(), 2, "{loopback:?}");
        assert_eq!(allowed_origins(&["*".into()], addr), AllowedOrigins::Any);
        assert_eq!(
            allowed_origins(&["http://a".into(), " ".into()], addr),
            AllowedOrigins::List(vec!["http://a".into()])
        );
    }

    #[test]
    fn the_default_connection_cap_is_below_the_descriptor_limit() {
        let cap = default_max_connections();
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        assert!((cap as u64) < soft, "{cap} sockets, {soft} descriptors");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://***@h/db");
        assert_eq!(redact("sqlite://./data/x.db"), "sqlite://./data/x.db");
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
    }
}
