//! `cargo xtask bench soak` (issue 13): minutes of steady, normal traffic
//! on a Roomcast with its default limits, first alone, then with abusers
//! mixed in, then alone again. It answers three questions: do the normal
//! clients keep their latency while abusers hammer the same server (p99
//! with abusers within 2x of without), is anything lost (the audit), and
//! does the server's memory come back down once the abusers leave (RSS
//! before, during and after).
//!
//! Every room has one more member than the normal traffic uses; in the
//! first `--abusers` rooms that member abuses, each in one of the
//! [`Kind`]s in turn. Normal senders post at `--rate` messages a second,
//! under the default limit of 10 a second per user, so the limits refuse
//! only the abusers. The abusers run on a thread and runtime of their own,
//! so the normal clients' measurements do not queue behind them in the
//! load tool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Opts;
use super::audit::Audit;
use super::report::{self, ms};
use super::scenarios;
use super::server::{Endpoint, Fixture, Limits, Target, node_of};
use super::traffic::{Pacing, Plan};
use super::ws::{self, Ws};

/// The default per-user limit the normal senders must stay under.
const DEFAULT_RATE_LIMIT: f64 = 10.0;

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    let rooms: usize = opts.get("rooms", 100)?;
    let members: usize = opts.get("members", 10)?;
    let rate: f64 = opts.get("rate", 2.0)?;
    let phase = Duration::from_secs_f64(opts.get("phase", 60.0)?);
    let settle = Duration::from_secs_f64(opts.get("settle", 20.0)?);
    let abusers: usize = opts.get("abusers", 14)?;
    let abuse_hz: f64 = opts.get("abuse-rate", 200.0)?;
    anyhow::ensure!(
        rate < DEFAULT_RATE_LIMIT,
        "--rate {rate} would be refused by the default limit of {DEFAULT_RATE_LIMIT}/s per user"
    );
    anyhow::ensure!(
        abusers <= rooms,
        "--abusers {abusers}: one per room, {rooms} rooms"
    );
    let target = scenarios::target_with(opts, rooms, members + 1, Limits::Defaults).await?;
    let normal = target.fixture().clone().shape(rooms, members)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_start = target.rss_kib();

    eprintln!("soak: calm phase, {}s", phase.as_secs_f64());
    let calm = measure(&target, &normal, "q", rate, phase).await?;
    eprintln!("soak: abused phase, {abusers} abusers");
    let abuse = Abuse::start(target.fixture().clone(), abusers, members, abuse_hz)?;
    let abused = measure(&target, &normal, "a", rate, phase).await;
    let abuse = abuse.stop()?;
    let abused = abused?;
    eprintln!("soak: abusers gone; settling {}s", settle.as_secs_f64());
    let (_, settle_rss) = with_rss(&target, tokio::time::sleep(settle)).await;
    let after = measure(&target, &normal, "z", rate, phase).await?;
    let rss_end = target.rss_kib();

    let phases = [("calm", &calm), ("abused", &abused), ("after", &after)];
    report::table(
        &format!(
            "soak: {rooms} rooms x {members} members at {rate}/s a room, {abusers} abusers, {}s phases, default limits ({})",
            phase.as_secs_f64(),
            target.name()
        ),
        &[
            "phase",
            "sent",
            "p50 ms",
            "p99 ms",
            "max ms",
            "missing",
            "dup",
            "disorder",
            "other",
            "errors",
            "rss max KiB",
            "rss end KiB",
        ],
        &phases
            .iter()
            .map(|(name, p)| p.cells(name))
            .collect::<Vec<_>>(),
    );
    let p99 = |p: &Phase| p.latency["p99_ms"].as_f64();
    let ratio = p99(&abused).zip(p99(&calm)).map(|(a, c)| a / c);
    let kib = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    println!(
        "normal clients' p99 with abusers / without: {} (target at most 2)",
        ratio.map_or("-".into(), |r| format!("{r:.2}"))
    );
    println!(
        "server RSS KiB: start {}, end of calm {}, max abused {}, after settling {}, end {}",
        kib(rss_start),
        kib(calm.rss.last),
        kib(abused.rss.max),
        kib(settle_rss.last),
        kib(rss_end)
    );
    report::table(
        "soak: what the abusers did and what they got",
        &[
            "kind", "abusers", "sent", "connects", "answers", "closes", "refused",
        ],
        &abuse
            .iter()
            .map(|(kind, c)| {
                vec![
                    kind.clone(),
                    c.abusers.to_string(),
                    c.sent.to_string(),
                    c.connects.to_string(),
                    counts(&c.answers),
                    counts(&c.closes),
                    counts(&c.refused),
                ]
            })
            .collect::<Vec<_>>(),
    );
    report::write(
        "soak",
        target.name(),
        json!({"rooms": rooms, "members": members, "rate_per_room": rate,
               "phase_secs": phase.as_secs_f64(), "settle_secs": settle.as_secs_f64(),
               "abusers": abusers, "abuse_rate": abuse_hz, "limits": "default"}),
        json!({
            "calm": calm.json(),
            "abused": abused.json(),
            "after": after.json(),
            "p99_ratio_abused_over_calm": ratio,
            "rss_kib": {"start": rss_start, "calm_end": calm.rss.last, "abused_max": abused.rss.max,
                        "after_settle": settle_rss.last, "end": rss_end},
            "abusers": abuse,
        }),
    )?;
    Ok(())
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ----------------------------------------------------------- the phases

/// One phase of normal traffic, measured.
struct Phase {
    sent: u64,
    latency: Value,
    audit: Audit,
    health: Value,
    rss: Rss,
}

impl Phase {
    fn cells(&self, name: &str) -> Vec<String> {
        let kib = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        vec![
            name.to_owned(),
            self.sent.to_string(),
            ms(&self.latency, "p50_ms"),
            ms(&self.latency, "p99_ms"),
            ms(&self.latency, "max_ms"),
            self.audit.missing.to_string(),
            self.audit.duplicated.to_string(),
            self.audit.out_of_order.to_string(),
            (self.audit.unexpected + self.audit.not_stored + self.audit.storage_seq_faults)
                .to_string(),
            self.health["error_frames"].to_string(),
            kib(self.rss.max),
            kib(self.rss.last),
        ]
    }

    fn json(&self) -> Value {
        json!({"sent": self.sent, "latency": self.latency, "audit": self.audit,
               "health": self.health, "rss_max_kib": self.rss.max, "rss_end_kib": self.rss.last})
    }
}

async fn measure(
    target: &Target,
    normal: &Fixture,
    tag: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let plan = Plan {
        tag: tag.into(),
        pacing: Pacing::Open { per_room_hz: rate },
        duration,
        drain: Duration::from_secs(15),
        storm_after: None,
        since_zero: false,
    };
    let (measured, rss) = with_rss(target, scenarios::measure_on(target, normal, plan, 64)).await;
    let (outcome, audit, _) = measured?;
    if !audit.clean() {
        eprintln!("AUDIT FAILED ({tag}): {audit:?}");
    }
    Ok(Phase {
        sent: outcome.sent.iter().sum(),
        latency: report::latency(&outcome.hist),
        audit,
        health: scenarios::health(&outcome),
        rss,
    })
}

/// The server's RSS, sampled while some work runs.
#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    max: Option<u64>,
    last: Option<u64>,
}

async fn with_rss<T>(target: &Target, work: impl Future<Output = T>) -> (T, Rss) {
    let mut rss = Rss::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                rss.last = target.rss_kib();
                return (out, rss);
            }
            _ = tick.tick() => {
                let now = target.rss_kib();
                rss.max = rss.max.max(now);
                rss.last = now;
            }
        }
    }
}

// ----------------------------------------------------------- the abusers

/// What one kind of abuser does, each as fast as `--abuse-rate` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `typing` frames without pause (the server coalesces them).
    TypingStorm,
    /// Messages far over the per-user rate (refused `rate_limited`, then
    /// closed for sustained abuse; it reconnects and goes on).
    Flood,
    /// A frame over the server's size limit (closed 1009), again and again.
    Oversized,
    /// Text that is not JSON and binary frames (`bad_frame`).
    Garbage,
    /// Log-ins with wrong passwords for made-up accounts, from 16 source
    /// addresses (throttled per account and per address).
    LoginStorm,
    /// 25 sockets of one user (the default cap is 20), with small receive
    /// buffers and never read: the server must not queue for them forever.
    SlowReader,
    /// WebSocket handshakes without a token (refused 401).
    Anonymous,
}

const KINDS: [Kind; 7] = [
    Kind::TypingStorm,
    Kind::Flood,
    Kind::Oversized,
    Kind::Garbage,
    Kind::LoginStorm,
    Kind::SlowReader,
    Kind::Anonymous,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TypingStorm => "typing storm",
            Kind::Flood => "message flood",
            Kind::Oversized => "oversized frames",
            Kind::Garbage => "garbage frames",
            Kind::LoginStorm => "log-in storm",
            Kind::SlowReader => "slow readers",
            Kind::Anonymous => "anonymous handshakes",
        }
    }
}

/// What the abusers of one kind sent and got back.
#[derive(Debug, Default, Clone, Serialize)]
struct Counts {
    abusers: u64,
    /// Frames or requests sent.
    sent: u64,
    /// Sockets opened.
    connects: u64,
    /// Error frames by code, or HTTP statuses of log-ins.
    answers: BTreeMap<String, u64>,
    /// Close codes received (`none`: the connection just ended).
    closes: BTreeMap<String, u64>,
    /// Refused handshakes by HTTP status.
    refused: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.abusers += other.abusers;
        self.sent += other.sent;
        self.connects += other.connects;
        for (mine, theirs) in [
            (&mut self.answers, &other.answers),
            (&mut self.closes, &other.closes),
            (&mut self.refused, &other.refused),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }

    fn count(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
        *map.entry(key.into()).or_default() += 1;
    }
}

/// The abusers, running on a thread of their own until stopped.
struct Abuse {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<anyhow::Result<BTreeMap<String, Counts>>>,
}

/// One abuser: its kind, where it connects and as whom.
#[derive(Clone)]
struct Abuser {
    kind: Kind,
    fixture: Arc<Fixture>,
    node: Endpoint,
    room: usize,
    member: usize,
    interval: Duration,
    stop: watch::Receiver<bool>,
}

impl Abuse {
    fn start(fixture: Fixture, abusers: usize, member: usize, hz: f64) -> anyhow::Result<Abuse> {
        let nodes = fixture.nodes()?;
        let fixture = Arc::new(fixture);
        let (stop, stopped) = watch::channel(false);
        let interval = Duration::from_secs_f64(1.0 / hz.max(1e-3));
        let list: Vec<Abuser> = (0..abusers)
            .map(|r| Abuser {
                kind: KINDS[r % KINDS.len()],
                fixture: Arc::clone(&fixture),
                node: node_of(&nodes, r).clone(),
                room: r,
                member,
                interval,
                stop: stopped.clone(),
            })
            .collect();
        let thread = std::thread::Builder::new()
            .name("abusers".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("the abusers' runtime")?;
                runtime.block_on(async move {
                    let tasks: Vec<_> = list
                        .into_iter()
                        .map(|a| tokio::spawn(async move { (a.kind, a.run().await) }))
                        .collect();
                    let mut by_kind: BTreeMap<String, Counts> = BTreeMap::new();
                    for task in tasks {
                        let (kind, counts) = task.await?;
                        by_kind.entry(kind.name().into()).or_default().add(&counts);
                    }
                    Ok(by_kind)
                })
            })
            .context("starting the abusers' thread")?;
        Ok(Abuse { stop, thread })
    }

    fn stop(self) -> anyhow::Result<BTreeMap<String, Counts>> {
        let _ = self.stop.send(true);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the abusers' thread panicked"))?
    }
}

/// Returns once the abusers are told to stop (the guard `wait_for` gives
/// is not `Send`, so it is dropped here).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Abuser {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) -> Counts {
        let mut counts = Counts {
            abusers: 1,
            ..Counts::default()
        };
        while !self.stopped() {
            match self.kind {
                Kind::LoginStorm => self.log_in(&mut counts).await,
                Kind::Anonymous => self.anonymous(&mut counts).await,
                Kind::SlowReader => self.hog(&mut counts).await,
                _ => self.on_socket(&mut counts).await,
            }
        }
        counts
    }

    /// Waits `pause`, or less if told to stop.
    async fn pause(&mut self, pause: Duration) {
        let _ = tokio::time::timeout(pause, until_stopped(&mut self.stop)).await;
    }

    /// The abuser's own socket (`None` after a refused handshake, counted).
    async fn connect(
        &self,
        counts: &mut Counts,
        as_member: bool,
        recv_buffer: Option<u32>,
        spread: u32,
    ) -> Option<Ws> {
        let room = &self.fixture.rooms[self.room];
        let member = as_member.then(|| &room.members[self.member]);
        let opened = async {
            let request = ws::request(&self.fixture, &self.node, room, member, None)?;
            let stream = ws::tcp(&self.node, spread, recv_buffer).await?;
            let config = WebSocketConfig::default().write_buffer_size(0);
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
            Ok::<_, anyhow::Error>(ws)
        };
        match tokio::time::timeout(Duration::from_secs(10), opened).await {
            Ok(Ok(ws)) => {
                counts.connects += 1;
                Some(ws)
            }
            Ok(Err(e)) => {
                let status = match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
                    Some(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                        r.status().as_u16().to_string()
                    }
                    _ => "failed".into(),
                };
                Counts::count(&mut counts.refused, status);
                None
            }
            Err(_) => {
                Counts::count(&mut counts.refused, "timeout");
                None
            }
        }
    }

    /// The frame this kind sends, the `n`th time.
    fn frame(&self, n: u64) -> Message {
        match self.kind {
            Kind::TypingStorm => Message::text(r#"{"type":"typing"}"#),
            Kind::Flood => Message::text(format!(
                r#"{{"type":"text","message":"x {} {n} 0","timestamp":"2024-01-01T00:00:00Z"}}"#,
                self.room
            )),
            // Over the default limit of 64 KiB.
            Kind::Oversized => Message::text("x".repeat(100 * 1024)),
            Kind::Garbage if n.is_multiple_of(2) => Message::text("}{ this is not JSON"),
            _ => Message::binary(vec![0u8; 64]),
        }
    }

    /// Typing storm, flood, oversized and garbage: sends its frames on one
    /// socket, reads what comes back, and reconnects when closed.
    async fn on_socket(&mut self, counts: &mut Counts) {
        let spread = self.room as u32;
        let Some(mut socket) = self.connect(counts, true, None, spread).await else {
            self.pause(Duration::from_millis(200)).await;
            return;
        };
        let mut next = Instant::now();
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                () = until_stopped(&mut stop) => return,
                () = tokio::time::sleep_until(next) => {
                    next += self.interval;
                    let frame = self.frame(counts.sent);
                    counts.sent += 1;
                    if socket.send(frame).await.is_err() {
                        Counts::count(&mut counts.closes, "none");
                        return;
                    }
                }
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                        if let Some(code) = frame["code"].as_str() {
                            Counts::count(&mut counts.answers, code);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or("none".into(), |f| u16::from(f.code).to_string());
                        Counts::count(&mut counts.closes, code);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        Counts::count(&mut counts.closes, "none");
                        return;
                    }
                }
            }
        }
    }

    /// Slow readers: 25 sockets of one user, tiny receive buffers, never
    /// read; dropped and opened again every 15 s.
    async fn hog(&mut self, counts: &mut Counts) {
        let mut sockets = Vec::new();
        for i in 0..25u32 {
            if let Some(ws) = self.connect(counts, true, Some(4096), i).await {
                sockets.push(ws);
            }
        }
        self.pause(Duration::from_secs(15)).await;
        drop(sockets);
    }

    /// Handshakes without a token.
    async fn anonymous(&mut self, counts: &mut Counts) {
        counts.sent += 1;
        let spread = counts.sent as u32;
        if let Some(mut ws) = self.connect(counts, false, None, spread).await {
            let _ = ws.close(None).await;
        }
        self.pause(self.interval).await;
    }

    /// One log-in with a wrong password for a made-up account, as a raw
    /// HTTP/1.1 request on a fresh connection.
    async fn log_in(&mut self, counts: &mut Counts) {
        counts.sent += 1;
        let body = format!(
            r#"{{"username":"ghost-{}-{}","password":"not-the-password"}}"#,
            self.room, counts.sent
        );
        let request = format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.node.addr,
            body.len()
        );
        let spread = counts.sent as u32;
        let status = async {
            let mut tcp = ws::tcp(&self.node, spread, None).await?;
            tcp.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 12];
            tcp.read_exact(&mut head).await?;
            // "HTTP/1.1 429"
            Ok::<_, anyhow::Error>(String::from_utf8_lossy(&head[9..12]).into_owned())
        };
        let status = match tokio::time::timeout(Duration::from_secs(30), status).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => "failed".into(),
            Err(_) => "timeout".into(),
        };
        Counts::count(&mut counts.answers, status);
        self.pause(self.interval).await;
    }
}
