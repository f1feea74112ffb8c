//! The scenarios of `cargo xtask bench`, each on a server of its own.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::Opts;
use super::audit::{self, Audit};
use super::report::{self, f1, ms};
use super::server::{self, Fixture, Limits, Roomcast, Services, Setup, Target};
use super::traffic::{self, Connected, Outcome, Pacing, Plan};
use roomcast_storage::postgres::TestDatabase;

pub async fn run(scenario: &str, opts: &Opts) -> anyhow::Result<()> {
    match scenario {
        "connections" => connections(opts).await,
        "fanout" => fanout(opts, None).await.map(drop),
        "saturation" => saturation(opts).await,
        "persisted" => persisted(opts).await,
        "storm" => storm(opts).await,
        "soak" => super::soak::run(opts).await,
        "all" => {
            connections(opts).await?;
            fanout(opts, Some(1_000.0)).await?;
            fanout(opts, Some(10_000.0)).await?;
            saturation(opts).await?;
            // The issue's second shape: one big room, fan-out bound.
            let big_room = opts
                .with_default("rooms", "1")
                .with_default("members", "1000");
            saturation(&big_room).await?;
            persisted(opts).await?;
            storm(opts).await
        }
        other => bail!("unknown bench scenario {other:?}; see cargo xtask bench help"),
    }
}

/// The server of a scenario: started here, or the one `--fixture` describes.
async fn target(opts: &Opts, rooms: usize, members: usize) -> anyhow::Result<Target> {
    target_with(opts, rooms, members, Limits::from_env()?).await
}

/// [`target`], with these per-user limits if Roomcast is started here.
pub(super) async fn target_with(
    opts: &Opts,
    rooms: usize,
    members: usize,
    limits: Limits,
) -> anyhow::Result<Target> {
    if let Some(path) = opts.text("fixture") {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let mut fixture: Fixture = serde_json::from_str(&text).context("decoding the fixture")?;
        if let Some(more) = opts.text("more-ws-bases") {
            fixture.more_ws_bases = more.split(',').map(str::to_owned).collect();
        }
        let pid = opts.text("server-pid").map(str::parse).transpose()?;
        return Ok(Target::External {
            fixture: fixture.shape(rooms, members)?,
            pid,
        });
    }
    let setup: Setup = opts.get("setup", Setup::Sqlite)?;
    let services = Services {
        postgres_admin_url: opts
            .text("postgres-admin-url")
            .unwrap_or(TestDatabase::DEFAULT_ADMIN_URL)
            .to_owned(),
        redis_url: opts
            .text("redis-url")
            .unwrap_or("redis://127.0.0.1:6379")
            .to_owned(),
    };
    let bin = server::build_roomcast()?;
    eprintln!("starting roomcast ({setup:?}) with {rooms} rooms x {members} members");
    let started = Roomcast::start(&bin, setup, &services, rooms, members, limits).await?;
    Ok(Target::Started(started))
}

/// Connects, runs, audits.
async fn measure(
    target: &Target,
    plan: Plan,
    concurrency: usize,
) -> anyhow::Result<(Outcome, Audit, Connected)> {
    measure_on(target, target.fixture(), plan, concurrency).await
}

/// [`measure`] with `fixture`'s rooms and members only (a part of the
/// target's: the soak keeps its abusers out of the measured traffic).
pub(super) async fn measure_on(
    target: &Target,
    fixture: &Fixture,
    plan: Plan,
    concurrency: usize,
) -> anyhow::Result<(Outcome, Audit, Connected)> {
    let nodes = fixture.nodes()?;
    let since = plan.since_zero.then_some(0);
    let (sockets, connected) = traffic::connect_all(fixture, &nodes, since, concurrency).await?;
    let tag = plan.tag.clone();
    let server_cpu = target.cpu_secs();
    let bench_cpu = server::cpu_secs("/proc/self/stat");
    let database_cpu = target.database_cpu().await;
    let mut outcome = traffic::run(fixture, sockets, plan).await?;
    let used = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
    outcome.server_cpu_secs = used(server_cpu, target.cpu_secs());
    outcome.bench_cpu_secs = used(bench_cpu, server::cpu_secs("/proc/self/stat"));
    if let (Some(before), Some(after)) = (database_cpu, target.database_cpu().await) {
        let secs = server::database_cpu_used(&before, &after);
        outcome.database_cpu_secs = Some(secs);
        let messages: u64 = outcome.sent.iter().sum();
        let server = outcome.server_cpu_secs.unwrap_or(0.0);
        eprintln!(
            "CPU per message sent ({messages}): server {:.0} µs, its PostgreSQL backends {:.0} µs",
            server * 1e6 / messages.max(1) as f64,
            secs * 1e6 / messages.max(1) as f64
        );
    }
    let truth = if outcome.has_seq() {
        audit::truth_from_storage(fixture, &tag).await?
    } else {
        audit::truth_from_senders(&outcome.sent)
    };
    let source = if outcome.has_seq() {
        "storage"
    } else {
        "senders"
    };
    let audit = audit::audit(
        source,
        &truth,
        &outcome.sent,
        outcome.members.iter().map(|m| (m.room, m.keys.as_slice())),
    );
    Ok((outcome, audit, connected))
}

pub(super) fn health(outcome: &Outcome) -> Value {
    let sum = |f: fn(&traffic::MemberReport) -> u64| outcome.members.iter().map(f).sum::<u64>();
    json!({
        "error_frames": sum(|m| m.errors),
        "reconnects": sum(|m| u64::from(m.reconnects)),
        "connect_failures": sum(|m| u64::from(m.connect_failures)),
        "members_timed_out": sum(|m| u64::from(m.timed_out)),
        "seq_seen": outcome.has_seq(),
        "server_cpu_secs": outcome.server_cpu_secs,
        "bench_cpu_secs": outcome.bench_cpu_secs,
        "database_cpu_secs": outcome.database_cpu_secs,
        "messages_sent": outcome.sent.iter().sum::<u64>(),
        "run_secs": outcome.run_secs,
    })
}

fn audit_cells(a: &Audit) -> Vec<String> {
    vec![
        a.missing.to_string(),
        a.duplicated.to_string(),
        a.out_of_order.to_string(),
        (a.unexpected + a.not_stored + a.storage_seq_faults).to_string(),
    ]
}

/// Says loudly when a run did not measure what it should have.
fn warn_unclean(a: &Audit, outcome: &Outcome) {
    if !a.clean() {
        eprintln!("AUDIT FAILED: {a:?}");
    }
    let timed_out = outcome.members.iter().filter(|m| m.timed_out).count();
    if timed_out > 0 || outcome.sent.iter().sum::<u64>() == 0 {
        eprintln!(
            "INCOMPLETE RUN: {timed_out} members timed out, {} messages sent",
            outcome.sent.iter().sum::<u64>()
        );
    }
}

// ------------------------------------------------------------ connections

async fn connections(opts: &Opts) -> anyhow::Result<()> {
    let wanted: usize = opts.get("connections", 15_000)?;
    let concurrency: usize = opts.get("concurrency", 256)?;
    let members = 10.min(wanted.max(1));
    let rooms = wanted.div_ceil(members);
    let target = target(opts, rooms, members).await?;
    let nodes = target.fixture().nodes()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.rss_kib();
    let (sockets, connected) =
        traffic::connect_all(target.fixture(), &nodes, None, concurrency).await?;
    // Let the server finish setting every socket up before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = target.rss_kib();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => {
            Some((a.saturating_sub(b) as f64) * 1024.0 / connected.sockets as f64)
        }
        _ => None,
    };
    drop(sockets);
    let rate = connected.sockets as f64 / connected.secs;
    report::table(
        &format!("connections ({})", target.name()),
        &[
            "sockets",
            "secs",
            "connects/s",
            "rss before KiB",
            "rss after KiB",
            "bytes/conn",
        ],
        &[vec![
            connected.sockets.to_string(),
            format!("{:.2}", connected.secs),
            format!("{rate:.0}"),
            before.map_or("-".into(), |v| v.to_string()),
            after.map_or("-".into(), |v| v.to_string()),
            per_conn.map_or("-".into(), |v| format!("{v:.0}")),
        ]],
    );
    report::write(
        "connections",
        target.name(),
        json!({"connections": wanted, "concurrency": concurrency, "rooms": rooms, "members": members}),
        json!({
            "sockets": connected.sockets,
            "connect_secs": connected.secs,
            "connects_per_sec": rate,
            "server_rss_before_kib": before,
            "server_rss_after_kib": after,
            "server_bytes_per_connection": per_conn,
        }),
    )?;
    Ok(())
}

// ---------------------------------------------------------------- fanout

struct FanoutRow {
    offered: f64,
    achieved: f64,
    latency: Value,
    audit: Audit,
    health: Value,
    /// CPU used per second of the run, server and load tool.
    server_cores: Option<f64>,
    bench_cores: Option<f64>,
}

impl FanoutRow {
    fn cells(&self) -> Vec<String> {
        let mut cells = vec![
            format!("{:.0}", self.offered),
            format!("{:.0}", self.achieved),
            ms(&self.latency, "p50_ms"),
            ms(&self.latency, "p90_ms"),
            ms(&self.latency, "p99_ms"),
            ms(&self.latency, "p99_9_ms"),
            ms(&self.latency, "max_ms"),
        ];
        cells.extend(audit_cells(&self.audit));
        let cores = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.2}"));
        cells.push(cores(self.server_cores));
        cells.push(cores(self.bench_cores));
        cells
    }

    fn json(&self) -> Value {
        json!({
            "offered_deliveries_per_sec": self.offered,
            "deliveries_per_sec": self.achieved,
            "latency": self.latency,
            "audit": self.audit,
            "health": self.health,
        })
    }
}

const FANOUT_HEADERS: [&str; 13] = [
    "offered/s",
    "delivered/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "missing",
    "dup",
    "disorder",
    "other",
    "srv cores",
    "bench cores",
];

async fn fanout_step(
    target: &Target,
    tag: String,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<FanoutRow> {
    let fixture = target.fixture();
    let members: usize = fixture.rooms.iter().map(|r| r.members.len()).sum();
    let plan = Plan {
        tag,
        pacing: Pacing::Open {
            per_room_hz: rate / members as f64,
        },
        duration,
        drain: Duration::from_secs(10),
        storm_after: None,
        since_zero: false,
    };
    let (outcome, audit, _) = measure(target, plan, 256).await?;
    warn_unclean(&audit, &outcome);
    let run_secs = outcome.run_secs;
    Ok(FanoutRow {
        server_cores: outcome.server_cpu_secs.map(|c| c / run_secs),
        bench_cores: outcome.bench_cpu_secs.map(|c| c / run_secs),
        offered: rate,
        achieved: outcome.deliveries_per_sec(),
        latency: report::latency(&outcome.hist),
        health: health(&outcome),
        audit,
    })
}

async fn fanout(opts: &Opts, rate: Option<f64>) -> anyhow::Result<FanoutRow> {
    let rooms: usize = opts.get("rooms", 50)?;
    let members: usize = opts.get("members", 10)?;
    let rate = match rate {
        Some(r) => r,
        None => opts.get("rate", 1_000.0)?,
    };
    let duration = Duration::from_secs_f64(opts.get("duration", 10.0)?);
    let target = target(opts, rooms, members).await?;
    let row = fanout_step(&target, "f".into(), rate, duration).await?;
    report::table(
        &format!(
            "fanout {rooms} rooms x {members} members, {}s ({})",
            duration.as_secs_f64(),
            target.name()
        ),
        &FANOUT_HEADERS,
        &[row.cells()],
    );
    report::write(
        "fanout",
        target.name(),
        json!({"rooms": rooms, "members": members, "rate": rate, "duration_secs": duration.as_secs_f64()}),
        row.json(),
    )?;
    Ok(row)
}

async fn saturation(opts: &Opts) -> anyhow::Result<()> {
    let rooms: usize = opts.get("rooms", 50)?;
    let members: usize = opts.get("members", 10)?;
    let start: f64 = opts.get("start", 10_000.0)?;
    let step: f64 = opts.get("step", 10_000.0)?;
    let max: f64 = opts.get("max", 200_000.0)?;
    let limit_ms: f64 = opts.get("p99-ms", 50.0)?;
    let duration = Duration::from_secs_f64(opts.get("duration", 5.0)?);
    let target = target(opts, rooms, members).await?;
    let mut rows = Vec::new();
    let mut best: Option<f64> = None;
    let mut rate = start;
    let mut i = 0;
    while rate <= max && i < 100 {
        let row = fanout_step(&target, format!("s{i}"), rate, duration).await?;
        let p99 = row.latency["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        eprintln!(
            "step {i}: offered {rate:.0}/s, delivered {:.0}/s, p99 {p99:.2} ms",
            row.achieved
        );
        let ok = p99 < limit_ms && row.audit.clean();
        if ok {
            best = Some(best.map_or(row.achieved, |b: f64| b.max(row.achieved)));
        }
        rows.push(row);
        if !ok {
            break;
        }
        rate += step;
        i += 1;
    }
    report::table(
        &format!(
            "saturation {rooms} rooms x {members} members, {}s steps, p99 limit {limit_ms} ms ({})",
            duration.as_secs_f64(),
            target.name()
        ),
        &FANOUT_HEADERS,
        &rows.iter().map(FanoutRow::cells).collect::<Vec<_>>(),
    );
    println!(
        "highest deliveries/s with p99 < {limit_ms} ms and a clean audit: {}",
        best.map_or("none".into(), |b| format!("{b:.0}"))
    );
    report::write(
        "saturation",
        target.name(),
        json!({"rooms": rooms, "members": members, "start": start, "step": step, "max": max,
               "p99_limit_ms": limit_ms, "step_secs": duration.as_secs_f64()}),
        json!({"best_deliveries_per_sec": best, "steps": rows.iter().map(FanoutRow::json).collect::<Vec<_>>()}),
    )?;
    Ok(())
}

// ------------------------------------------------------------- persisted

async fn persisted(opts: &Opts) -> anyhow::Result<()> {
    let rooms: usize = opts.get("rooms", 50)?;
    let members: usize = opts.get("members", 1)?;
    let window: u64 = opts.get("window", 4)?;
    let duration = Duration::from_secs_f64(opts.get("duration", 10.0)?);
    let target = target(opts, rooms, members).await?;
    let plan = Plan {
        tag: "p".into(),
        pacing: Pacing::Closed { window },
        duration,
        drain: Duration::from_secs(10),
        storm_after: None,
        since_zero: false,
    };
    let (outcome, audit, _) = measure(&target, plan, 256).await?;
    warn_unclean(&audit, &outcome);
    let sent: u64 = outcome.sent.iter().sum();
    let stored = if audit.source == "storage" {
        audit.stored
    } else {
        sent
    };
    let per_sec = stored as f64 / duration.as_secs_f64();
    let latency = report::latency(&outcome.hist);
    let mut cells = vec![
        sent.to_string(),
        stored.to_string(),
        format!("{per_sec:.0}"),
        ms(&latency, "p50_ms"),
        ms(&latency, "p99_ms"),
        ms(&latency, "max_ms"),
    ];
    cells.extend(audit_cells(&audit));
    report::table(
        &format!(
            "persisted: {rooms} senders, {window} in flight each, {}s ({})",
            duration.as_secs_f64(),
            target.name()
        ),
        &[
            "sent", "stored", "stored/s", "p50 ms", "p99 ms", "max ms", "missing", "dup",
            "disorder", "other",
        ],
        &[cells],
    );
    report::write(
        "persisted",
        target.name(),
        json!({"rooms": rooms, "members": members, "window": window, "duration_secs": duration.as_secs_f64()}),
        json!({"sent": sent, "stored": stored, "stored_per_sec": per_sec, "ack_latency": latency,
               "audit": audit, "health": health(&outcome)}),
    )?;
    Ok(())
}

// ----------------------------------------------------------------- storm

async fn storm(opts: &Opts) -> anyhow::Result<()> {
    let rooms: usize = opts.get("rooms", 1_000)?;
    let members: usize = opts.get("members", 10)?;
    let rate: f64 = opts.get("rate", 2_000.0)?;
    let duration = Duration::from_secs_f64(opts.get("duration", 8.0)?);
    let storm_at = Duration::from_secs_f64(opts.get("storm-at", 3.0)?);
    let target = target(opts, rooms, members).await?;
    let plan = Plan {
        tag: "r".into(),
        pacing: Pacing::Open {
            per_room_hz: rate / (rooms * members) as f64,
        },
        duration,
        drain: Duration::from_secs(20),
        storm_after: Some(storm_at),
        since_zero: true,
    };
    let (outcome, audit, connected) = measure(&target, plan, 256).await?;
    warn_unclean(&audit, &outcome);
    let back: Vec<Duration> = outcome
        .members
        .iter()
        .filter_map(|m| m.back_after)
        .collect();
    let resumed: Vec<Duration> = outcome
        .members
        .iter()
        .filter_map(|m| m.resumed_after)
        .collect();
    let secs = |v: &[Duration]| v.iter().max().map(Duration::as_secs_f64);
    let all = outcome.members.len();
    let latency = report::latency(&outcome.hist);
    let mut cells = vec![
        all.to_string(),
        back.len().to_string(),
        secs(&back).map_or("-".into(), |s| format!("{s:.2}")),
        resumed.len().to_string(),
        secs(&resumed).map_or("-".into(), |s| format!("{s:.2}")),
        f1(outcome.deliveries_per_sec()),
        ms(&latency, "p99_ms"),
        ms(&latency, "max_ms"),
    ];
    cells.extend(audit_cells(&audit));
    report::table(
        &format!(
            "reconnect storm: {all} sockets dropped at {}s ({})",
            storm_at.as_secs_f64(),
            target.name()
        ),
        &[
            "sockets",
            "back",
            "all back s",
            "resumed",
            "all resumed s",
            "delivered/s",
            "p99 ms",
            "max ms",
            "missing",
            "dup",
            "disorder",
            "other",
        ],
        &[cells],
    );
    report::write(
        "storm",
        target.name(),
        json!({"rooms": rooms, "members": members, "rate": rate, "duration_secs": duration.as_secs_f64(),
               "storm_at_secs": storm_at.as_secs_f64()}),
        json!({
            "sockets": all,
            "initial_connect_secs": connected.secs,
            "back": back.len(),
            "all_back_secs": secs(&back),
            "resumed": resumed.len(),
            "all_resumed_secs": secs(&resumed),
            "latency": latency,
            "audit": audit,
            "health": health(&outcome),
        }),
    )?;
    Ok(())
}

// ----------------------------------------------------------------- audit

/// `cargo xtask audit --fixture FILE`: every room's log, replayed.
pub async fn audit_log(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let fixture: Fixture = serde_json::from_str(&text).context("decoding the fixture")?;
    // No run tag matches: only the seq checks count.
    let truth = audit::truth_from_storage(&fixture, "\u{0}").await?;
    let faults: u64 = truth.iter().map(|t| t.seq_faults).sum();
    println!(
        "{} rooms replayed from seq 0; seq gaps or repeats: {faults}",
        truth.len()
    );
    if faults > 0 {
        bail!("the stored logs have {faults} seq faults");
    }
    Ok(())
}
