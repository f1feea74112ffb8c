//! `cargo xtask bench storage`: durable message writes, one commit per
//! message versus group commit, on SQLite and PostgreSQL.
//!
//! 64 senders (by default), each the only writer of its own room, post as
//! fast as their previous post is acknowledged: the load a chat server's
//! sockets put on storage. Reported: persisted messages per second and the
//! p50/p99 latency of one post (submit to durable acknowledgement), measured
//! after a warm-up. A post carries a `clientId`, as real clients send, so the
//! idempotency lookup is part of the cost. After each run the bench checks
//! every room's `last_seq` equals what its sender was acknowledged, so a
//! fast but wrong writer cannot pass for a fast one.
//!
//! PostgreSQL is the machine's server (`ROOMCAST_BENCH_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), in a throwaway database;
//! SQLite is a file in a temp dir on the same disk. Results go to
//! the run's file under `bench/results/` (see bench/README.md).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use roomcast_domain::{ClientId, MessageBody, RoomSlug, Username};
use roomcast_storage::postgres::TestDatabase;
use roomcast_storage::{CommitPolicy, NewMessage, RoomSeed, Storage};
use serde_json::json;

#[derive(Debug, Clone)]
struct Settings {
    senders: usize,
    warmup: Duration,
    measure: Duration,
    pg_writers: usize,
    backends: Vec<String>,
}

/// One measured configuration.
#[derive(Debug)]
struct Outcome {
    backend: &'static str,
    mode: &'static str,
    policy: CommitPolicy,
    posts: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

impl Outcome {
    fn per_second(&self) -> f64 {
        self.posts as f64 / self.seconds
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let settings = parse(args)?;
    super::multi_thread_runtime()?.block_on(bench(settings))
}

fn parse(args: &[String]) -> anyhow::Result<Settings> {
    let mut settings = Settings {
        senders: 64,
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(5),
        pg_writers: CommitPolicy::default().writers,
        backends: vec!["sqlite".into(), "postgres".into()],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value"))
                .cloned()
        };
        match flag.as_str() {
            "--senders" => settings.senders = value()?.parse().context("--senders")?,
            "--seconds" => {
                settings.measure = Duration::from_secs_f64(value()?.parse().context("--seconds")?)
            }
            "--pg-writers" => settings.pg_writers = value()?.parse().context("--pg-writers")?,
            "--backend" => settings.backends = vec![value()?],
            other => bail!(
                "unknown option {other:?}; options: --senders N --seconds S --pg-writers N --backend sqlite|postgres"
            ),
        }
    }
    if settings.senders == 0 {
        bail!("--senders must be at least 1");
    }
    Ok(settings)
}

async fn bench(settings: Settings) -> anyhow::Result<()> {
    let group = CommitPolicy::default();
    let pg_group = CommitPolicy {
        writers: settings.pg_writers.max(1),
        ..group
    };
    let mut outcomes = Vec::new();
    let mut notes = Vec::new();
    for backend in &settings.backends {
        match backend.as_str() {
            "sqlite" => {
                for (mode, policy) in [
                    ("one commit per message", CommitPolicy::ONE_PER_WRITE),
                    ("group commit", group),
                ] {
                    let dir = tempfile::tempdir().context("temp dir")?;
                    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                    outcomes.push(measure(&settings, "sqlite", mode, policy, &url).await?);
                }
            }
            "postgres" => {
                let admin = std::env::var("ROOMCAST_BENCH_PG_URL")
                    .unwrap_or_else(|_| TestDatabase::DEFAULT_ADMIN_URL.into());
                for (mode, policy) in [
                    ("one commit per message", CommitPolicy::ONE_PER_WRITE),
                    ("group commit", pg_group),
                ] {
                    let db = match TestDatabase::create(&admin).await {
                        Ok(db) => db,
                        Err(e) => {
                            let note = format!("postgres skipped: cannot create a database: {e}");
                            eprintln!("{note}");
                            notes.push(note);
                            break;
                        }
                    };
                    outcomes.push(measure(&settings, "postgres", mode, policy, db.url()).await?);
                }
            }
            other => bail!("unknown backend {other:?}"),
        }
    }
    report(&settings, &outcomes, &notes)
}

async fn measure(
    settings: &Settings,
    backend: &'static str,
    mode: &'static str,
    policy: CommitPolicy,
    url: &str,
) -> anyhow::Result<Outcome> {
    eprintln!("{backend}, {mode} ({policy:?}): warming up...");
    let store = roomcast_storage::connect_with(url, policy)
        .await
        .with_context(|| format!("opening {backend}"))?;
    let seeds = (0..settings.senders)
        .map(|i| -> anyhow::Result<RoomSeed> {
            let host = Username::parse(format!("sender-{i}"))?;
            Ok(RoomSeed {
                members: vec![host.clone()],
                host,
                slug: RoomSlug::parse(format!("room-{i}"))?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rooms = store.seed_rooms(&seeds).await.context("seeding rooms")?;

    let started = Instant::now();
    let measure_from = started + settings.warmup;
    let stop = measure_from + settings.measure;
    let mut tasks = Vec::with_capacity(rooms.len());
    for (i, seeded) in rooms.into_iter().enumerate() {
        let store: Storage = Arc::clone(&store);
        let author = seeded
            .members
            .first()
            .cloned()
            .context("a seeded room has its sender")?;
        let room_id = seeded.room.id;
        tasks.push(tokio::spawn(async move {
            let body = MessageBody::parse("hello from the storage bench")?;
            let mut latencies = Vec::new();
            let mut acknowledged = 0u64;
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= stop {
                    break;
                }
                n += 1;
                store
                    .post_message(NewMessage {
                        room_id,
                        author: author.clone(),
                        body: body.clone(),
                        client_id: Some(ClientId::parse(format!("s{i}-{n}"))?),
                    })
                    .await
                    .context("post")?;
                acknowledged += 1;
                let done = Instant::now();
                if sent >= measure_from && done <= stop {
                    latencies.push(done - sent);
                }
            }
            let stored = store.last_seq(room_id).await.context("last_seq")?;
            if stored != acknowledged {
                bail!("room of sender {i}: {acknowledged} posts acknowledged, last_seq {stored}");
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("sender task")??);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let outcome = Outcome {
        backend,
        mode,
        policy,
        posts: latencies.len(),
        seconds: settings.measure.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    };
    eprintln!(
        "{backend}, {mode}: {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
        outcome.per_second(),
        ms(outcome.p50),
        ms(outcome.p99)
    );
    Ok(outcome)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(settings: &Settings, outcomes: &[Outcome], notes: &[String]) -> anyhow::Result<()> {
    println!(
        "\nstorage: {} concurrent senders, each in its own room; {:?} measured after {:?} warm-up\n",
        settings.senders, settings.measure, settings.warmup
    );
    println!(
        "{:<9} {:<24} {:>8} {:>12} {:>10} {:>10}",
        "backend", "mode", "writers", "msg/s", "p50 ms", "p99 ms"
    );
    for o in outcomes {
        println!(
            "{:<9} {:<24} {:>8} {:>12.0} {:>10.2} {:>10.2}",
            o.backend,
            o.mode,
            o.policy.writers,
            o.per_second(),
            ms(o.p50),
            ms(o.p99)
        );
    }
    for note in notes {
        println!("note: {note}");
    }

    let (rev, dirty) = git_revision();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let doc = json!({
        "scenario": "storage",
        "git_revision": rev,
        "git_dirty": dirty,
        "unix_time": unix,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "senders": settings.senders,
        "warmup_seconds": settings.warmup.as_secs_f64(),
        "measure_seconds": settings.measure.as_secs_f64(),
        "notes": notes,
        "results": outcomes.iter().map(|o| json!({
            "backend": o.backend,
            "mode": o.mode,
            "max_batch": o.policy.max_batch,
            "writers": o.policy.writers,
            "posts": o.posts,
            "msgs_per_sec": (o.per_second() * 10.0).round() / 10.0,
            "p50_ms": (ms(o.p50) * 1000.0).round() / 1000.0,
            "p99_ms": (ms(o.p99) * 1000.0).round() / 1000.0,
        })).collect::<Vec<_>>(),
    });
    super::report::write("storage", "in-process", serde_json::Value::Null, doc)?;
    Ok(())
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The commit measured, and whether the tree had uncommitted changes.
fn git_revision() -> (String, bool) {
    let root = workspace_root();
    let rev = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    (rev, dirty)
}
