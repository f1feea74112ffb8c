//! `cargo xtask bench <scenario>`: benchmarks, run by hand or in a
//! dedicated job, never as timed tests. Each scenario prints a table and
//! writes its numbers, with the git revision, under `bench/results/`.
//!
//! The load tool shares the machine with the server, so it is lean: it
//! re-runs itself as a release build, uses one current-thread runtime
//! (`--threads N` for more), builds each frame once, and reads only seed
//! fields to measure (`seq` only for the audit and resume, when present).
//! Without `--fixture FILE` it builds Roomcast in release mode and starts
//! it on a temporary data directory seeded with `roomcast fixture`, in the
//! `--setup` asked for (SQLite + in-memory; PostgreSQL + Redis; two nodes,
//! on one Redis or on a Redis Cluster); with it, any server that speaks the seed protocol
//! and prints a FIXTURE.md document can be driven.

mod audit;
mod layer;
mod report;
mod scenarios;
mod server;
mod soak;
mod storage;
mod traffic;
mod trivial;
mod unread;
mod ws;

use std::collections::HashMap;
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask bench <scenario> [--option value ...]

scenarios:
  connections  idle sockets: server memory per connection, connects/s
               --connections 15000 --concurrency 256
  fanout       M rooms x K members, one open-loop sender per room
               --rooms 50 --members 10 --rate 1000 (deliveries/s) --duration 10
  saturation   fanout with the rate stepped up until p99 passes --p99-ms 50
               --rooms 50 --members 10 --start 10000 --step 10000 --max 200000 --duration 5
  persisted    closed loop: one sender per room with --window 4 in flight
               --rooms 50 --members 1 --duration 10
  storm        every socket dropped at once with traffic running; time to resume
               --rooms 1000 --members 10 --rate 2000 --duration 8 --storm-at 3
  soak         normal traffic under the default limits, alone, then with abusers
               (typing storms, floods, oversized and garbage frames, log-in
               storms, slow readers, anonymous handshakes), then alone again:
               p99 with / without abusers, audit, server RSS before/during/after
               --rooms 100 --members 10 --rate 2 (msgs/s a room) --phase 60
               --settle 20 --abusers 14 --abuse-rate 200 (each, per second)
  unread       GET /api/rooms' storage read: one user in --rooms 1000 of
               --messages 10000 each, --calls 30, --backend sqlite|postgres
               (both by default; in-process, no server)
  all          connections, fanout at 1000 and 10000, saturation (50 x 10, then
               1 room x 1000 members), persisted, storm

every scenario:
  --setup S         how to start Roomcast: sqlite (default: SQLite, in-memory
                    layer), postgres (PostgreSQL + Redis), two-nodes (two
                    nodes on PostgreSQL + Redis; members alternate nodes),
                    two-nodes-cluster (two-nodes on a private three-master
                    Redis Cluster started for the run instead of one Redis),
                    trivial (not Roomcast: a one-thread in-memory fan-out
                    server with no storage or checks, the ceiling)
  --postgres-admin-url URL   default postgres://postgres@127.0.0.1:5432/postgres
                    (a fresh database per run, dropped after)
  --redis-url URL   default redis://127.0.0.1:6379 (a fresh prefix per run)
  --fixture FILE    drive the server FILE describes instead of starting Roomcast
  --more-ws-bases URL,URL  with --fixture: the cluster's other nodes
  --server-pid PID  with --fixture: the process whose memory to read
  --threads N       load-tool runtime threads (default 1)

cargo xtask audit --fixture FILE: replay every room (?since=0) and check
its seq log has no gap and no repeat.";

/// `--name value` pairs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Opts {
    values: HashMap<String, String>,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let name = arg
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument {arg:?}\n\n{USAGE}"))?;
            let value = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            values.insert(name.to_owned(), value.clone());
        }
        Ok(Self { values })
    }

    pub(crate) fn get<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
        }
    }

    /// These options, with `name` set to `value` unless it was given.
    pub(crate) fn with_default(&self, name: &str, value: &str) -> Self {
        let mut opts = self.clone();
        opts.values
            .entry(name.to_owned())
            .or_insert_with(|| value.to_owned());
        opts
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(scenario) = args.first().map(String::as_str) else {
        eprintln!("{USAGE}");
        return Ok(());
    };
    if scenario == "help" || scenario == "--help" {
        eprintln!("{USAGE}");
        return Ok(());
    }
    if cfg!(debug_assertions) {
        return rerun_in_release("bench", args);
    }
    // In-process component benchmarks, with their own options.
    match scenario {
        "storage" => return storage::run(&args[1..]),
        "layer" => return layer::run(&args[1..]),
        "unread" => return unread::run(&args[1..]),
        _ => {}
    }
    let opts = Opts::parse(&args[1..])?;
    let runtime = runtime(&opts)?;
    runtime.block_on(scenarios::run(scenario, &opts))
}

/// `xtask trivial-server`: the baseline server `--setup trivial` runs.
pub(crate) fn trivial_server(args: &[String]) -> anyhow::Result<()> {
    trivial::run(args)
}

/// `cargo xtask audit --fixture FILE`.
pub(crate) fn audit_command(args: &[String]) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        return rerun_in_release("audit", args);
    }
    let opts = Opts::parse(args)?;
    let path = opts.text("fixture").context("audit needs --fixture FILE")?;
    let runtime = runtime(&opts)?;
    runtime.block_on(scenarios::audit_log(path))
}

/// The runtime of an in-process benchmark: the component under test
/// gets every core, as it would in a server.
fn multi_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn runtime(opts: &Opts) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads: usize = opts.get("threads", 1)?;
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().context("starting the runtime")
}

/// A debug build would measure itself: run the same command from a
/// release build of xtask instead.
fn rerun_in_release(task: &str, args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "$ cargo run --release -p xtask -- {task} {}",
        args.join(" ")
    );
    let status = Command::new(cargo)
        .args(["run", "--release", "--quiet", "-p", "xtask", "--", task])
        .args(args)
        .status()
        .context("running the release build of xtask")?;
    if !status.success() {
        bail!("{task} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Opts;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_default_fills_only_what_was_not_given() {
        let opts = Opts::parse(&args(&["--rooms", "7"])).expect("parse");
        let big = opts
            .with_default("rooms", "1")
            .with_default("members", "1000");
        assert_eq!(big.get("rooms", 0usize).expect("rooms"), 7);
        assert_eq!(big.get("members", 0usize).expect("members"), 1000);
        // The original is left as it was.
        assert_eq!(opts.text("members"), None);
    }

    #[test]
    fn an_option_without_a_value_is_refused() {
        assert!(Opts::parse(&args(&["--rooms"])).is_err());
        assert!(Opts::parse(&args(&["rooms", "7"])).is_err());
    }
}
