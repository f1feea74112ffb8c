//! `cargo xtask bench layer`: what the Redis channel layer costs compared
//! with the in-memory one, at the same load.
//!
//! Two nodes (two hubs) in one process, on one layer: node A publishes
//! stored-event envelopes to many rooms at a fixed rate (open loop, so a
//! slow layer shows as latency, not as a politely lower rate); node B has
//! one local socket feed per room and measures, per envelope, the time
//! from A's `Hub::publish` to B's feed yielding it. Then a closed-loop run
//! finds how many publishes per second one Redis carries end to end on
//! this machine. Target: Redis adds at most 1 ms at p50.
//!
//! The measurement always runs in release (`cargo xtask bench` re-runs
//! itself so). Results go to the run's file under `bench/results/` (see bench/README.md).
//!
//! Flags: `--rate N` publishes/s (default 2000), `--rooms N` (100),
//! `--secs N` measured seconds (5), `--size N` frame bytes (200),
//! `--redis URL` (`ROOMCAST_BENCH_REDIS_URL`, default the machine's Redis).
//!
//! `--cluster N` measures something else: the closed loop through one
//! private `redis-server` against a private three-master Redis Cluster
//! (each primary with a replica, as in production), both started here
//! with the same settings, in N interleaved rounds each, so the shared
//! machine's drift hits both alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use roomcast_broadcast::{
    Backfill, BroadcastError, Envelope, Hub, HubConfig, InMemoryBus, RedisConfig, RedisLayer,
    RoomFeed,
};
use roomcast_domain::{RoomId, Seq};

#[derive(Debug, Clone)]
struct Params {
    rate: u64,
    rooms: usize,
    secs: u64,
    size: usize,
    redis: String,
    cluster_rounds: u64,
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let params = parse(args)?;
    super::multi_thread_runtime()?.block_on(measure(params))
}

fn parse(args: &[String]) -> anyhow::Result<Params> {
    let mut params = Params {
        rate: 2000,
        rooms: 100,
        secs: 5,
        size: 200,
        redis: std::env::var("ROOMCAST_BENCH_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        cluster_rounds: 0,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag} {value}"))
        };
        match flag.as_str() {
            "--rate" => params.rate = number()?.max(1),
            "--rooms" => params.rooms = usize::try_from(number()?.max(1))?,
            "--secs" => params.secs = number()?.max(1),
            "--size" => params.size = usize::try_from(number()?.max(8))?,
            "--redis" => params.redis = value.clone(),
            "--cluster" => params.cluster_rounds = number()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(params)
}

/// Storage that never has anything: the bench loses nothing to fill.
struct NoStorage;

#[async_trait]
impl Backfill for NoStorage {
    async fn last_seq(&self, _room: RoomId) -> Result<Seq, BroadcastError> {
        Ok(Seq::ZERO)
    }
    async fn events_after(
        &self,
        _room: RoomId,
        _after: Seq,
        _limit: u32,
    ) -> Result<Vec<Envelope>, BroadcastError> {
        Ok(Vec::new())
    }
}

fn hub_builder() -> roomcast_broadcast::HubBuilder {
    Hub::builder(
        HubConfig {
            room_capacity: 4096,
            gap_timeout: Duration::from_secs(3600),
            ..HubConfig::default()
        },
        Arc::new(NoStorage),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Redis => "redis",
        }
    }
}

/// Node A (publishes) and node B (receives) on one fresh bus.
async fn nodes(kind: Kind, params: &Params) -> anyhow::Result<(Hub, Hub)> {
    let (a, b) = (hub_builder(), hub_builder());
    Ok(match kind {
        Kind::Memory => {
            let bus = InMemoryBus::new();
            let (la, lb) = (bus.node(a.inbox()), bus.node(b.inbox()));
            (a.build(Arc::new(la)), b.build(Arc::new(lb)))
        }
        Kind::Redis => {
            let prefix = format!("roomcast-bench:{}:", uuid::Uuid::new_v4().simple());
            let config = || {
                let mut c = RedisConfig::new(params.redis.clone());
                c.channel_prefix = prefix.clone();
                c
            };
            let la = RedisLayer::connect(config(), a.inbox())
                .await
                .with_context(|| format!("connecting to {}", params.redis))?;
            let lb = RedisLayer::connect(config(), b.inbox())
                .await
                .with_context(|| format!("connecting to {}", params.redis))?;
            (a.build(Arc::new(la)), b.build(Arc::new(lb)))
        }
    })
}

/// A frame of `size` bytes that starts with its send time.
fn frame(epoch: Instant, size: usize) -> Bytes {
    let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut bytes = vec![b' '; size];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    Bytes::from(bytes)
}

fn sent_at(frame: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(frame.get(..8)?.try_into().ok()?))
}

/// Reads one room's feed on node B; records latencies (µs) of envelopes
/// sent after `measure_from` (ns since epoch) until `stop`.
async fn receive(
    mut feed: RoomFeed,
    epoch: Instant,
    measure_from: u64,
    expected: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
) -> Vec<u64> {
    let mut latencies = Vec::new();
    loop {
        let envelope = match tokio::time::timeout(Duration::from_secs(2), feed.recv()).await {
            Ok(Ok(env)) => env,
            // Done (nothing for 2 s after the publisher stopped) or lagged.
            _ => break,
        };
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Envelope::Event { frame, .. } = envelope
            && let Some(sent) = sent_at(&frame)
        {
            received.fetch_add(1, Ordering::Relaxed);
            if sent >= measure_from {
                latencies.push(now.saturating_sub(sent) / 1_000);
            }
        }
        if received.load(Ordering::Relaxed) >= expected.load(Ordering::Relaxed)
            && expected.load(Ordering::Relaxed) > 0
        {
            break;
        }
    }
    latencies
}

#[derive(Debug)]
struct Latency {
    layer: &'static str,
    published: u64,
    delivered: u64,
    achieved_rate: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Open loop: `rate` publishes/s spread over the rooms, one warm-up second
/// then `secs` measured.
async fn latency(kind: Kind, params: &Params) -> anyhow::Result<Latency> {
    let (a, b) = nodes(kind, params).await?;
    let rooms: Vec<RoomId> = (0..params.rooms).map(|_| RoomId::new()).collect();
    let epoch = Instant::now();
    let warmup = Duration::from_secs(1);
    let measure_from = u64::try_from(warmup.as_nanos()).unwrap_or(0);
    let expected = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    // Node A's own sockets are in the rooms too, as on a real node.
    let mut a_feeds = Vec::new();
    let mut receivers = tokio::task::JoinSet::new();
    for room in &rooms {
        a_feeds.push(a.join(*room).await?);
        let feed = b.join(*room).await?;
        receivers.spawn(receive(
            feed,
            epoch,
            measure_from,
            expected.clone(),
            received.clone(),
        ));
    }
    let total = warmup + Duration::from_secs(params.secs);
    let tick = Duration::from_millis(1);
    let per_tick = params.rate as f64 / 1000.0;
    let mut seqs = vec![0u64; rooms.len()];
    let mut published = 0u64;
    let mut owed = 0.0f64;
    let mut next_room = 0usize;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    while started.elapsed() < total {
        interval.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let i = next_room;
            next_room = (next_room + 1) % rooms.len();
            seqs[i] += 1;
            let envelope = Envelope::Event {
                seq: Seq::new(seqs[i]),
                frame: frame(epoch, params.size),
            };
            if let Err(e) = a.publish(rooms[i], envelope).await {
                bail!("publish failed: {e}");
            }
            published += 1;
        }
    }
    let elapsed = started.elapsed();
    expected.store(published, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = receivers.join_next().await {
        latencies.extend(done.context("receiver task")?);
    }
    drop(a_feeds);
    a.close().await;
    b.close().await;
    latencies.sort_unstable();
    Ok(Latency {
        layer: kind.name(),
        published,
        delivered: received.load(Ordering::Relaxed),
        achieved_rate: published as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&latencies, 0.50),
        p90_us: percentile(&latencies, 0.90),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
    })
}

/// Closed loop: 64 publishers as fast as they can for 3 s; publishes per
/// second delivered to node B through one Redis.
async fn throughput(params: &Params) -> anyhow::Result<(f64, u64, u64)> {
    let (a, b) = nodes(Kind::Redis, params).await?;
    let rooms: Vec<RoomId> = (0..64).map(|_| RoomId::new()).collect();
    let epoch = Instant::now();
    let expected = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = tokio::task::JoinSet::new();
    for room in &rooms {
        let feed = b.join(*room).await?;
        receivers.spawn(receive(
            feed,
            epoch,
            u64::MAX,
            expected.clone(),
            received.clone(),
        ));
    }
    let run_for = Duration::from_secs(3);
    let mut publishers = tokio::task::JoinSet::new();
    for room in rooms.clone() {
        let a = a.clone();
        let size = params.size;
        publishers.spawn(async move {
            let started = Instant::now();
            let mut seq = 0u64;
            while started.elapsed() < run_for {
                seq += 1;
                let envelope = Envelope::Event {
                    seq: Seq::new(seq),
                    frame: frame(epoch, size),
                };
                if a.layer().publish(room, envelope).await.is_err() {
                    break;
                }
            }
            seq
        });
    }
    let started = Instant::now();
    let mut published = 0;
    while let Some(done) = publishers.join_next().await {
        published += done.context("publisher task")?;
    }
    let elapsed = started.elapsed();
    expected.store(published, Ordering::Relaxed);
    while let Some(done) = receivers.join_next().await {
        done.context("receiver task")?;
    }
    a.close().await;
    b.close().await;
    let delivered = received.load(Ordering::Relaxed);
    Ok((
        delivered as f64 / elapsed.as_secs_f64(),
        published,
        delivered,
    ))
}

fn git_revision() -> String {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output();
    let rev = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    };
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty { format!("{rev}-dirty") } else { rev }
}

/// The machine's load averages (1, 5, 15 min), from `/proc/loadavg`.
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `--cluster N`: closed-loop publishes/s through one private Redis and
/// through a private three-master cluster, rounds interleaved.
async fn compare_cluster(params: Params) -> anyhow::Result<()> {
    use roomcast_broadcast::testing::{PrivateCluster, PrivateRedis};

    eprintln!(
        "bench layer --cluster: {} rounds of 3 s closed loop, 64 publishers, {}-byte frames",
        params.cluster_rounds, params.size
    );
    let single = PrivateRedis::start().await;
    let cluster = PrivateCluster::start().await;
    let load_before = load_average();
    let mut rounds = Vec::new();
    let (mut one, mut three) = (Vec::new(), Vec::new());
    println!(
        "{:<6} {:<12} {:>12} {:>10}",
        "round", "layer", "publishes/s", "delivered"
    );
    for round in 1..=params.cluster_rounds {
        for (name, url) in [("one-redis", single.url()), ("cluster", cluster.url())] {
            let through = Params {
                redis: url,
                ..params.clone()
            };
            let (rate, published, delivered) = throughput(&through).await?;
            println!("{round:<6} {name:<12} {rate:>12.0} {delivered:>10}");
            if name == "cluster" {
                three.push(rate);
            } else {
                one.push(rate);
            }
            rounds.push(serde_json::json!({
                "round": round,
                "layer": name,
                "publishes_per_s_delivered": rate,
                "published": published,
                "delivered": delivered,
            }));
        }
    }
    let load_after = load_average();
    let (one, three) = (median(&mut one), median(&mut three));
    let ratio = if one > 0.0 { three / one } else { 0.0 };
    println!(
        "median: one Redis {one:.0}/s, three-master cluster {three:.0}/s (cluster / one = {ratio:.2}); \
         load average {load_before:?} before, {load_after:?} after"
    );
    let result = serde_json::json!({
        "scenario": "layer-cluster",
        "revision": git_revision(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "params": {
            "rounds": params.cluster_rounds,
            "publishers": 64,
            "secs_per_round": 3,
            "frame_bytes": params.size,
        },
        "rounds": rounds,
        "median_one_redis": one,
        "median_cluster": three,
        "cluster_over_one": ratio,
        "load_average_before": load_before,
        "load_average_after": load_after,
    });
    super::report::write(
        "layer-cluster",
        "in-process",
        serde_json::Value::Null,
        result,
    )?;
    Ok(())
}

async fn measure(params: Params) -> anyhow::Result<()> {
    if params.cluster_rounds > 0 {
        return compare_cluster(params).await;
    }
    eprintln!(
        "bench layer: {} publishes/s over {} rooms, {} s measured after 1 s warm-up, {}-byte frames",
        params.rate, params.rooms, params.secs, params.size
    );
    let memory = latency(Kind::Memory, &params).await?;
    let redis = latency(Kind::Redis, &params).await?;
    let (max_rate, max_published, max_delivered) = throughput(&params).await?;
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "layer",
        "published",
        "delivered",
        "rate/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs"
    );
    for r in [&memory, &redis] {
        println!(
            "{:<8} {:>10} {:>10} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.layer,
            r.published,
            r.delivered,
            r.achieved_rate,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us
        );
    }
    let added_p50 = redis.p50_us as i64 - memory.p50_us as i64;
    let added_p99 = redis.p99_us as i64 - memory.p99_us as i64;
    let verdict = if added_p50 <= 1000 { "met" } else { "MISSED" };
    println!(
        "Redis adds {added_p50} µs at p50 and {added_p99} µs at p99 (target ≤ 1000 µs at p50: {verdict})"
    );
    println!(
        "closed loop, one Redis, 64 publishers: {max_rate:.0} publishes/s delivered ({max_delivered} of {max_published})"
    );

    let revision = git_revision();
    let latencies: Vec<serde_json::Value> = [&memory, &redis]
        .iter()
        .map(|r| {
            serde_json::json!({
                "layer": r.layer,
                "published": r.published,
                "delivered": r.delivered,
                "achieved_rate": r.achieved_rate,
                "p50_us": r.p50_us,
                "p90_us": r.p90_us,
                "p99_us": r.p99_us,
                "p999_us": r.p999_us,
                "max_us": r.max_us,
            })
        })
        .collect();
    let result = serde_json::json!({
        "scenario": "layer",
        "revision": revision,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "params": {
            "rate": params.rate,
            "rooms": params.rooms,
            "secs": params.secs,
            "frame_bytes": params.size,
        },
        "latency": latencies,
        "redis_added_p50_us": added_p50,
        "redis_added_p99_us": added_p99,
        "target_p50_added_us": 1000,
        "target_met": added_p50 <= 1000,
        "redis_closed_loop": {
            "publishers": 64,
            "publishes_per_s_delivered": max_rate,
            "published": max_published,
            "delivered": max_delivered,
        },
    });
    super::report::write("layer", "in-process", serde_json::Value::Null, result)?;
    Ok(())
}
