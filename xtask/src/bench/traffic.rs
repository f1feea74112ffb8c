//! The load engine shared by the scenarios: connect every member, then run
//! one sender per room (open loop at a fixed rate, or closed loop with a
//! window in flight) while every member records what it receives.
//!
//! All of it runs on the bench's runtime (one thread by default): a task per
//! socket, no locks, frames built once per message, and per-task
//! histograms merged at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::server::{Endpoint, Fixture, node_of};
use super::ws::{self, Seen, Ws};

/// How the senders pace themselves.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// Each sender sends at this rate on a fixed schedule; latency counts
    /// from the scheduled time, so a stalled sender does not hide the stall
    /// (no coordinated omission).
    Open { per_room_hz: f64 },
    /// Each sender keeps this many messages in flight; latency counts from
    /// the actual send to the sender's own copy.
    Closed { window: u64 },
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Marks this run's bodies, so other traffic is ignored.
    pub tag: String,
    pub pacing: Pacing,
    pub duration: Duration,
    /// How long receivers wait for stragglers after the sending ends.
    pub drain: Duration,
    /// Drop every socket at once this long after the start.
    pub storm_after: Option<Duration>,
    /// Connect with `?since=0`, so a resume point is known from the start.
    pub since_zero: bool,
}

/// One member's view of the run.
#[derive(Debug)]
pub struct MemberReport {
    pub room: usize,
    /// This run's message keys, in arrival order.
    pub keys: Vec<u64>,
    /// When the last of them arrived.
    pub last_delivery: Option<Instant>,
    pub hist: Histogram<u64>,
    pub errors: u64,
    pub reconnects: u32,
    pub connect_failures: u32,
    pub has_seq: bool,
    pub timed_out: bool,
    /// Storm: from the drop to the socket being back, and to `synced`.
    pub back_after: Option<Duration>,
    pub resumed_after: Option<Duration>,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub hist: Histogram<u64>,
    pub sent: Vec<u64>,
    pub members: Vec<MemberReport>,
    pub send_window: Duration,
    /// When the first send was scheduled.
    pub start: Instant,
    /// From the start to the last member finishing (drain included).
    pub run_secs: f64,
    /// CPU seconds used during the run (filled in by the caller).
    pub server_cpu_secs: Option<f64>,
    pub bench_cpu_secs: Option<f64>,
    /// CPU of the PostgreSQL backends serving the run's database.
    pub database_cpu_secs: Option<f64>,
}

impl Outcome {
    pub fn deliveries(&self) -> u64 {
        self.members.iter().map(|m| m.keys.len() as u64).sum()
    }

    /// Deliveries per second over the send window, or over the time until
    /// the last delivery when the server fell behind and delivered later.
    pub fn deliveries_per_sec(&self) -> f64 {
        let span = self
            .members
            .iter()
            .filter_map(|m| m.last_delivery)
            .max()
            .map_or(Duration::ZERO, |last| {
                last.saturating_duration_since(self.start)
            });
        self.deliveries() as f64 / span.max(self.send_window).as_secs_f64()
    }

    pub fn has_seq(&self) -> bool {
        self.members.iter().any(|m| m.has_seq)
    }
}

pub fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds")
}

/// Connection statistics of [`connect_all`].
#[derive(Debug, Clone, Copy)]
pub struct Connected {
    pub sockets: usize,
    pub secs: f64,
}

/// Opens every member's socket, `concurrency` handshakes at a time.
/// `sockets[r][m]`: room r's member m.
pub async fn connect_all(
    fixture: &Fixture,
    nodes: &[Endpoint],
    since: Option<u64>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Vec<Ws>>, Connected)> {
    let started = std::time::Instant::now();
    let jobs = fixture.rooms.iter().enumerate().flat_map(|(r, room)| {
        room.members
            .iter()
            .enumerate()
            .map(move |(m, member)| (r, m, room, member))
    });
    let mut spread = 0u32;
    let results = futures_util::stream::iter(jobs)
        .map(|(r, m, room, member)| {
            spread += 1;
            let spread = spread;
            async move {
                let ws = ws::connect(fixture, node_of(nodes, m), room, member, since, spread).await;
                (r, m, ws)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let mut sockets: Vec<Vec<Option<Ws>>> = fixture
        .rooms
        .iter()
        .map(|room| room.members.iter().map(|_| None).collect())
        .collect();
    let mut failures = 0;
    let mut first_error = None;
    for (r, m, ws) in results {
        match ws {
            Ok(ws) => sockets[r][m] = Some(ws),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e.context(format!("{failures} of the sockets failed to connect")));
    }
    let count = sockets.iter().map(Vec::len).sum();
    let mut sockets: Vec<Vec<Ws>> = sockets
        .into_iter()
        .map(|room| room.into_iter().flatten().collect())
        .collect();
    let dropped = settle(&mut sockets).await;
    if dropped > 0 {
        eprintln!("{dropped} frames the connections caused (presence) read before the run");
    }
    Ok((
        sockets,
        Connected {
            sockets: count,
            secs,
        },
    ))
}

/// A socket is settled once it has been quiet this long.
const QUIET: Duration = Duration::from_millis(300);
/// Settling waits at most this long.
const SETTLE_AT_MOST: Duration = Duration::from_secs(30);

/// Reads and drops what the connections themselves caused until every
/// socket has been quiet for [`QUIET`]: each member's `join` reaches every
/// other member of its room (a million frames in a room of 1,000), and
/// unread they sit in the sockets ahead of the run's first messages, so
/// the run would measure the load tool's one thread parsing them. What is
/// measured is steady traffic; what joining costs is the `connections`
/// and `storm` scenarios'. Returns how many frames were dropped.
async fn settle(sockets: &mut [Vec<Ws>]) -> u64 {
    let reads = sockets.iter_mut().flatten().map(|ws| async move {
        let mut frames = 0u64;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(QUIET, ws.next()).await {
            frames += 1;
        }
        frames
    });
    let all = futures_util::future::join_all(reads);
    tokio::time::timeout(SETTLE_AT_MOST, all)
        .await
        .map_or(0, |counts| counts.iter().sum())
}

struct Ctx {
    fixture: Fixture,
    nodes: Vec<Endpoint>,
    plan: Plan,
    /// The bench clock's zero (bodies carry nanoseconds since it).
    zero: Instant,
    start: Instant,
    end: Instant,
    deadline: Instant,
    storm_at: Option<Instant>,
    storm: watch::Receiver<bool>,
    sent: Vec<AtomicU64>,
    done: Vec<AtomicBool>,
}

/// Runs `plan` over already connected sockets (room by room, member 0
/// sends) and returns what every member saw.
pub async fn run(fixture: &Fixture, sockets: Vec<Vec<Ws>>, plan: Plan) -> anyhow::Result<Outcome> {
    let nodes = fixture.nodes()?;
    let zero = Instant::now();
    let start = zero + Duration::from_millis(200);
    let end = start + plan.duration;
    let storm_at = plan.storm_after.map(|d| start + d);
    let (storm_tx, storm) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        fixture: fixture.clone(),
        nodes,
        deadline: end + plan.drain,
        plan,
        zero,
        start,
        end,
        storm_at,
        storm,
        sent: sockets.iter().map(|_| AtomicU64::new(0)).collect(),
        done: sockets.iter().map(|_| AtomicBool::new(false)).collect(),
    });
    let mut tasks = Vec::new();
    for (r, room) in sockets.into_iter().enumerate() {
        for (m, socket) in room.into_iter().enumerate() {
            tasks.push(tokio::spawn(member(Arc::clone(&ctx), r, m, socket)));
        }
    }
    if let Some(at) = storm_at {
        tokio::time::sleep_until(at).await;
        let _ = storm_tx.send(true);
    }
    let mut members = Vec::with_capacity(tasks.len());
    for task in tasks {
        members.push(task.await?);
    }
    let run_secs = start.elapsed().as_secs_f64();
    let mut hist = histogram();
    for m in &members {
        hist.add(&m.hist)?;
    }
    Ok(Outcome {
        hist,
        sent: ctx.sent.iter().map(|s| s.load(Ordering::Relaxed)).collect(),
        members,
        send_window: ctx.plan.duration,
        start,
        run_secs,
        server_cpu_secs: None,
        bench_cpu_secs: None,
        database_cpu_secs: None,
    })
}

fn nanos(ctx: &Ctx, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(ctx.zero).as_nanos()).unwrap_or(u64::MAX)
}

/// One socket's life: member 0 of a room also sends.
async fn member(ctx: Arc<Ctx>, r: usize, m: usize, socket: Ws) -> MemberReport {
    let mut report = MemberReport {
        room: r,
        keys: Vec::new(),
        last_delivery: None,
        hist: histogram(),
        errors: 0,
        reconnects: 0,
        connect_failures: 0,
        has_seq: false,
        timed_out: false,
        back_after: None,
        resumed_after: None,
    };
    let mut socket = Some(socket);
    let mut last_seq: Option<u64> = ctx.plan.since_zero.then_some(0);
    let mut awaiting_sync = false;
    let sender = m == 0;
    let rooms = ctx.sent.len() as f64;
    let open_loop = matches!(ctx.plan.pacing, Pacing::Open { .. });
    let (interval, window) = match ctx.plan.pacing {
        Pacing::Open { per_room_hz } => (
            Duration::from_secs_f64(1.0 / per_room_hz.max(1e-6)),
            u64::MAX,
        ),
        Pacing::Closed { window } => (Duration::ZERO, window.max(1)),
    };
    // Stagger the rooms' schedules across one interval.
    let mut next = ctx.start + interval.mul_f64(r as f64 / rooms);
    let mut sent = 0u64;
    let mut storm = ctx.storm.clone();
    let mut stormed = false;
    loop {
        let now = Instant::now();
        let sending = sender
            && if open_loop {
                next < ctx.end
            } else {
                now < ctx.end
            };
        if sender && !sending {
            ctx.done[r].store(true, Ordering::Relaxed);
        }
        if !sending
            && now >= ctx.end
            && ctx.done[r].load(Ordering::Relaxed)
            && report.keys.len() as u64 >= ctx.sent[r].load(Ordering::Relaxed)
        {
            break;
        }
        if now >= ctx.deadline {
            report.timed_out = true;
            break;
        }
        let Some(ws) = socket.as_mut() else {
            // Lost: come back (with ?since= when the server has seq).
            let since = report.has_seq.then(|| last_seq.unwrap_or(0));
            match reconnect(&ctx, r, m, since, &mut report).await {
                Some(ws) => {
                    socket = Some(ws);
                    awaiting_sync = since.is_some();
                    if let Some(at) = ctx.storm_at.filter(|_| stormed) {
                        report.back_after = Some(at.elapsed());
                        if !awaiting_sync {
                            report.resumed_after = report.back_after;
                        }
                    }
                }
                None => {
                    report.timed_out = true;
                    break;
                }
            }
            continue;
        };
        let may_send = sending && sent - (report.keys.len() as u64).min(sent) < window;
        let wake = if may_send {
            if open_loop { next } else { now }
        } else if now >= ctx.end {
            now + Duration::from_millis(20)
        } else {
            ctx.end
        };
        tokio::select! {
            biased;
            _ = storm.changed(), if !stormed => {
                stormed = true;
                socket = None; // dropped: TCP closes without a close frame
                report.reconnects += 1;
            }
            () = tokio::time::sleep_until(wake) => {
                if may_send {
                    let at = if open_loop { next } else { Instant::now() };
                    let frame = ws::text_frame(&ctx.plan.tag, r, sent, nanos(&ctx, at));
                    sent += 1;
                    ctx.sent[r].fetch_add(1, Ordering::Relaxed);
                    next += interval;
                    if ws.send(Message::text(frame)).await.is_err() {
                        socket = None;
                        report.reconnects += 1;
                    }
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let Some(seen) = Seen::parse(text.as_str()) else { continue };
                    if seen.seq.is_some() {
                        report.has_seq = true;
                    }
                    if seen.error.is_some() {
                        report.errors += 1;
                    }
                    if seen.is_synced() {
                        if awaiting_sync {
                            awaiting_sync = false;
                            if let Some(at) = ctx.storm_at.filter(|_| stormed) {
                                report.resumed_after = Some(at.elapsed());
                            }
                        }
                        continue;
                    }
                    if let Some(seq) = seen.seq.filter(|_| seen.action.is_some()) {
                        last_seq = Some(seq);
                    }
                    if seen.is_new()
                        && let Some((room, key, t)) = seen.bench_body(&ctx.plan.tag)
                        && room == r
                    {
                        report.keys.push(key);
                        let now = Instant::now();
                        report.last_delivery = Some(now);
                        let micros = nanos(&ctx, now).saturating_sub(t) / 1_000;
                        let _ = report.hist.record(micros.max(1));
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    socket = None;
                    report.reconnects += 1;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    report
}

/// Connects again until it works or the run's deadline passes.
async fn reconnect(
    ctx: &Ctx,
    r: usize,
    m: usize,
    since: Option<u64>,
    report: &mut MemberReport,
) -> Option<Ws> {
    let room = &ctx.fixture.rooms[r];
    let member = &room.members[m];
    let spread = (r * room.members.len() + m) as u32 + report.reconnects;
    let mut pause = Duration::from_millis(20);
    while Instant::now() < ctx.deadline {
        match ws::connect(
            &ctx.fixture,
            node_of(&ctx.nodes, m),
            room,
            member,
            since,
            spread,
        )
        .await
        {
            Ok(ws) => return Some(ws),
            Err(_) => {
                report.connect_failures += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
    None
}
