//! The server's Prometheus metrics, named and described in one place.
//!
//! Recording goes through the `metrics` facade: with no recorder installed
//! (an embedder that does not want metrics) every call is a no-op. The
//! binary installs a Prometheus recorder (histograms with millisecond-fit
//! buckets, see [`LATENCY_BUCKETS`]) and gives a render function to
//! [`crate::AppState::set_metrics`], which describes every metric in
//! [`CATALOGUE`] and registers it at zero, so a fresh server already
//! exposes each one with its `# HELP` line (dashboards and alerts see 0,
//! not "no data").

use std::time::Duration;

/// Bucket bounds of every latency histogram, in seconds: from half a
/// millisecond to ten seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of every size histogram (writes per batch): powers of
/// two up to the default largest batch (`CommitPolicy::max_batch`, 512).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// What a metric is, for registering and describing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A latency in seconds, with [`LATENCY_BUCKETS`].
    Histogram,
    /// A count (writes per batch), with [`SIZE_BUCKETS`].
    Sizes,
}

/// The histograms that take [`SIZE_BUCKETS`] rather than
/// [`LATENCY_BUCKETS`], for the exporter's per-metric buckets.
pub fn size_histograms() -> impl Iterator<Item = &'static str> {
    CATALOGUE
        .iter()
        .filter(|(_, kind, _, _)| *kind == Kind::Sizes)
        .map(|(name, _, _, _)| *name)
}

/// A label and the values registered at zero.
pub type Labels = Option<(&'static str, &'static [&'static str])>;

/// A metric: name, kind, help, and for a labelled metric its label.
pub type Entry = (&'static str, Kind, &'static str, Labels);

/// Every metric this crate exposes.
pub const CATALOGUE: &[Entry] = &[
    (
        "roomcast_connections",
        Kind::Gauge,
        "WebSockets open on this node.",
        None,
    ),
    (
        "roomcast_connections_opened_total",
        Kind::Counter,
        "WebSockets accepted on this node since start.",
        None,
    ),
    (
        "roomcast_socket_closes_total",
        Kind::Counter,
        "WebSockets ended, by close code (`none`: the connection ended without a close frame; `other`: a code a client chose).",
        Some((
            "code",
            &[
                "1000", "1001", "1005", "1008", "1009", "1011", "1013", "none", "other",
            ],
        )),
    ),
    (
        "roomcast_handshake_refusals_total",
        Kind::Counter,
        "WebSocket handshakes refused, by reason.",
        Some((
            "reason",
            &[
                "unauthorized",
                "origin",
                "not_participant",
                "room_not_found",
                "bad_request",
                "unavailable",
                "overloaded",
            ],
        )),
    ),
    (
        "roomcast_rooms_local",
        Kind::Gauge,
        "Rooms with at least one socket on this node.",
        None,
    ),
    (
        "roomcast_events_stored_total",
        Kind::Counter,
        "Events stored by this node, by action.",
        Some(("action", &["new", "update", "delete"])),
    ),
    (
        "roomcast_events_broadcast_total",
        Kind::Counter,
        "Stored events' frames written to sockets on this node.",
        None,
    ),
    (
        "roomcast_send_errors_total",
        Kind::Counter,
        "Error frames sent to clients, by code.",
        Some((
            "code",
            &[
                "too_long",
                "empty",
                "not_found",
                "forbidden",
                "bad_frame",
                "rate_limited",
                "unavailable",
            ],
        )),
    ),
    (
        "roomcast_slow_consumers_closed_total",
        Kind::Counter,
        "Sockets closed (1013) because their client did not keep up.",
        None,
    ),
    (
        "roomcast_http_request_duration_seconds",
        Kind::Histogram,
        "HTTP requests by method, matched route and status: time to the response head.",
        None,
    ),
    (
        "roomcast_storage_write_duration_seconds",
        Kind::Histogram,
        "A write from queueing to its commit acknowledged (waiting for its batch included).",
        None,
    ),
    (
        "roomcast_storage_write_errors_total",
        Kind::Counter,
        "Writes that storage failed (nothing stored; the client is told `unavailable`).",
        None,
    ),
    (
        roomcast_storage::metrics::BATCH_SIZE,
        Kind::Sizes,
        "Writes committed together in one transaction (group commit), per batch; both storage backends.",
        None,
    ),
    (
        roomcast_storage::metrics::QUEUED_WRITES,
        Kind::Gauge,
        "Writes queued for the storage writers and not yet taken into a batch (backpressure when it nears 8192 per writer).",
        None,
    ),
    (
        "roomcast_store_to_broadcast_duration_seconds",
        Kind::Histogram,
        "From a write's commit acknowledged to its event handed to this node's sockets and the channel layer.",
        None,
    ),
    (
        "roomcast_channel_publish_duration_seconds",
        Kind::Histogram,
        "Publishing one stored event to the channel layer.",
        None,
    ),
    (
        "roomcast_channel_publish_errors_total",
        Kind::Counter,
        "Publishes to the channel layer that failed (other nodes fill the gap from storage).",
        None,
    ),
    (
        "roomcast_channel_layer_up",
        Kind::Gauge,
        "1 if the channel layer answers its health check at scrape time, else 0.",
        None,
    ),
    (
        roomcast_broadcast::metrics::RECONNECTS,
        Kind::Counter,
        "Connections to Redis made again after being lost, by connection (each Redis Cluster primary's connection counts); every live room resyncs from storage after one.",
        Some(("connection", roomcast_broadcast::metrics::CONNECTIONS)),
    ),
    (
        "roomcast_password_checks_refused_total",
        Kind::Counter,
        "Password checks turned away because the hashing slots and their queue were full.",
        None,
    ),
    (
        "roomcast_rate_limited_total",
        Kind::Counter,
        "Requests or frames refused by a per-user limit, by what was limited.",
        Some(("what", &["message", "typing", "login", "signup"])),
    ),
    (
        "roomcast_build_info",
        Kind::Gauge,
        "Always 1; the labels say which build runs.",
        None,
    ),
    (
        "process_cpu_seconds_total",
        Kind::Gauge,
        "CPU time used by the process (user and system), in seconds.",
        None,
    ),
    (
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the process, in bytes.",
        None,
    ),
    (
        "process_open_fds",
        Kind::Gauge,
        "Open file descriptors (sockets included).",
        None,
    ),
    (
        "process_start_time_seconds",
        Kind::Gauge,
        "When the process started, in seconds since the Unix epoch.",
        None,
    ),
];

/// Describes every metric and registers it at zero. Called once a
/// recorder is installed; harmless to call again.
pub(crate) fn register() {
    for (name, kind, help, labels) in CATALOGUE {
        let (name, help) = (*name, *help);
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help)
            }
            Kind::Sizes => metrics::describe_histogram!(name, metrics::Unit::Count, help),
        }
        let values: &[&str] = labels.map_or(&[], |(_, values)| values);
        match (kind, labels) {
            (Kind::Counter, None) => metrics::counter!(name).increment(0),
            (Kind::Counter, Some((label, _))) => {
                for value in values {
                    metrics::counter!(name, *label => *value).increment(0);
                }
            }
            (Kind::Gauge, _) => metrics::gauge!(name).increment(0.0),
            (Kind::Histogram | Kind::Sizes, _) => {
                let _ = metrics::histogram!(name);
            }
        }
    }
    metrics::gauge!("roomcast_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

pub(crate) fn connection_opened() {
    metrics::gauge!("roomcast_connections").increment(1.0);
    metrics::counter!("roomcast_connections_opened_total").increment(1);
}

pub(crate) fn connection_closed() {
    metrics::gauge!("roomcast_connections").decrement(1.0);
}

/// A socket ended with this close code (`None`: no close frame).
pub(crate) fn socket_closed(code: Option<u16>) {
    let label = match code {
        None => "none",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1005) => "1005",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1011) => "1011",
        Some(1013) => "1013",
        Some(_) => "other",
    };
    metrics::counter!("roomcast_socket_closes_total", "code" => label).increment(1);
}

pub(crate) fn handshake_refused(reason: &'static str) {
    metrics::counter!("roomcast_handshake_refusals_total", "reason" => reason).increment(1);
}

pub(crate) fn event_stored(action: &'static str) {
    metrics::counter!("roomcast_events_stored_total", "action" => action).increment(1);
}

/// Frames of stored events written to sockets.
pub(crate) fn events_delivered(n: u64) {
    metrics::counter!("roomcast_events_broadcast_total").increment(n);
}

pub(crate) fn send_error(code: &'static str) {
    metrics::counter!("roomcast_send_errors_total", "code" => code).increment(1);
}

pub(crate) fn slow_consumer_closed() {
    metrics::counter!("roomcast_slow_consumers_closed_total").increment(1);
}

pub(crate) fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    metrics::histogram!(
        "roomcast_http_request_duration_seconds",
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .record(took.as_secs_f64());
}

/// A password check turned away because the hashing slots and their queue
/// were full.
pub(crate) fn password_check_refused() {
    metrics::counter!("roomcast_password_checks_refused_total").increment(1);
}

/// A request or frame refused by a limit (`what`: message, typing, login,
/// signup).
pub(crate) fn rate_limited(what: &'static str) {
    metrics::counter!("roomcast_rate_limited_total", "what" => what).increment(1);
}

pub(crate) fn storage_write(took: Duration, ok: bool) {
    metrics::histogram!("roomcast_storage_write_duration_seconds").record(took.as_secs_f64());
    if !ok {
        metrics::counter!("roomcast_storage_write_errors_total").increment(1);
    }
}

pub(crate) fn store_to_broadcast(took: Duration) {
    metrics::histogram!("roomcast_store_to_broadcast_duration_seconds").record(took.as_secs_f64());
}

pub(crate) fn channel_publish(took: Duration, ok: bool) {
    metrics::histogram!("roomcast_channel_publish_duration_seconds").record(took.as_secs_f64());
    if !ok {
        metrics::counter!("roomcast_channel_publish_errors_total").increment(1);
    }
}

/// Sets the gauges read at scrape time: this node's rooms, the channel
/// layer's state, and the process's resources (Linux `/proc`; left
/// unchanged where it cannot be read).
pub(crate) fn scrape(rooms_local: usize, layer_up: bool) {
    metrics::gauge!("roomcast_rooms_local").set(rooms_local as f64);
    metrics::gauge!("roomcast_channel_layer_up").set(if layer_up { 1.0 } else { 0.0 });
    let process = process::read();
    if let Some(cpu) = process.cpu_seconds {
        metrics::gauge!("process_cpu_seconds_total").set(cpu);
    }
    if let Some(rss) = process.resident_bytes {
        metrics::gauge!("process_resident_memory_bytes").set(rss);
    }
    if let Some(fds) = process.open_fds {
        metrics::gauge!("process_open_fds").set(fds);
    }
    if let Some(start) = process.start_time_seconds {
        metrics::gauge!("process_start_time_seconds").set(start);
    }
}

/// The process's own resources, from `/proc/self` (no unsafe, no libc).
mod process {
    #[derive(Debug, Default)]
    pub(super) struct Process {
        pub cpu_seconds: Option<f64>,
        pub resident_bytes: Option<f64>,
        pub open_fds: Option<f64>,
        pub start_time_seconds: Option<f64>,
    }

    /// Clock ticks per second of `/proc/*/stat`: `USER_HZ`, which Linux
    /// fixes at 100 for user space on every architecture it supports.
    const USER_HZ: f64 = 100.0;

    pub(super) fn read() -> Process {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // Fields after the command name (which may hold spaces), from
        // field 3 (`state`) on: utime is field 14, stime 15, starttime 22.
        let fields: Vec<&str> = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let cpu_seconds = match (field(14), field(15)) {
            (Some(u), Some(s)) => Some((u + s) / USER_HZ),
            _ => None,
        };
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let start_time_seconds = match (boot_time, field(22)) {
            (Some(boot), Some(ticks)) => Some(boot + ticks / USER_HZ),
            _ => None,
        };
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map(|kib| kib * 1024.0);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as f64);
        Process {
            cpu_seconds,
            resident_bytes,
            open_fds,
            start_time_seconds,
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_process_reads_itself() {
            let p = super::read();
            assert!(
                p.resident_bytes.is_some_and(|r| r > 1024.0 * 1024.0),
                "{p:?}"
            );
            assert!(p.open_fds.is_some_and(|n| n >= 3.0), "{p:?}");
            assert!(p.cpu_seconds.is_some(), "{p:?}");
            assert!(p.start_time_seconds.is_some_and(|s| s > 1.6e9), "{p:?}");
        }
    }
}
