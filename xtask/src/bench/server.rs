//! The server under test: Roomcast started by the bench (release build,
//! temporary data directory, SQLite and the in-memory layer), or any server
//! described by a FIXTURE.md document (`--fixture FILE`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

/// `../shared/FIXTURE.md`: all a load tool may know about a server.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    pub name: String,
    pub ws_base: String,
    pub cookie_name: String,
    pub origin: String,
    pub rooms: Vec<FixtureRoom>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FixtureRoom {
    pub host: String,
    pub slug: String,
    pub members: Vec<FixtureMember>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FixtureMember {
    pub token: String,
}

impl Fixture {
    /// The first `rooms` rooms with their first `members` members.
    pub fn shape(mut self, rooms: usize, members: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.rooms.len() >= rooms,
            "the fixture has {} rooms, {rooms} needed",
            self.rooms.len()
        );
        self.rooms.truncate(rooms);
        for room in &mut self.rooms {
            anyhow::ensure!(
                room.members.len() >= members,
                "room {}/{} has {} members, {members} needed",
                room.host,
                room.slug,
                room.members.len()
            );
            room.members.truncate(members);
        }
        Ok(self)
    }

    /// The socket address of `ws_base` (`ws://host:port/...`).
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        let rest = self
            .ws_base
            .strip_prefix("ws://")
            .context("ws_base must be a ws:// URL")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .context("ws_base resolves to no address")?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the load tool only drives servers on loopback addresses, not {addr}"
        );
        Ok(addr)
    }
}

/// A Roomcast process this bench started; stopped (SIGTERM, then kill) on
/// drop, its data directory removed.
#[derive(Debug)]
pub struct Roomcast {
    child: Option<Child>,
    /// Drains the server's stdout until it exits.
    stdout: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
    dir: PathBuf,
    pub fixture: Fixture,
}

/// The server of a run: ours, or someone else's.
#[derive(Debug)]
pub enum Target {
    Started(Roomcast),
    External { fixture: Fixture, pid: Option<u32> },
}

impl Target {
    pub fn fixture(&self) -> &Fixture {
        match self {
            Target::Started(r) => &r.fixture,
            Target::External { fixture, .. } => fixture,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Target::Started(r) => r.child.as_ref().map(Child::id),
            Target::External { pid, .. } => *pid,
        }
    }

    /// The server's resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        cpu_secs(&format!("/proc/{}/stat", self.pid()?))
    }

    pub fn name(&self) -> &str {
        &self.fixture().name
    }
}

/// Builds the server in release mode once per bench invocation.
pub fn build_roomcast() -> anyhow::Result<PathBuf> {
    crate::cargo(&["build", "--release", "--quiet", "--bin", "roomcast"])?;
    // We run from the same target directory's release folder.
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let bin = exe
        .parent()
        .context("the xtask binary has no folder")?
        .join("roomcast");
    anyhow::ensure!(bin.exists(), "{} was not built", bin.display());
    Ok(bin)
}

impl Roomcast {
    /// Seeds `rooms` x `members` with `roomcast fixture`, then serves.
    pub fn start(bin: &Path, rooms: usize, members: usize) -> anyhow::Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("roomcast-bench-{}-{stamp}", std::process::id()));
        let started = Self::start_in(bin, &dir, rooms, members);
        if started.is_err() {
            // Once `Roomcast` exists its drop removes the folder; before, here.
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(bin: &Path, dir: &Path, rooms: usize, members: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let bind = format!("127.0.0.1:{port}");
        let common = ["--data-dir", path_str(dir)?, "--bind", &bind];
        let out = Command::new(bin)
            .arg("fixture")
            .args(common)
            .args([
                "--rooms",
                &rooms.to_string(),
                "--members",
                &members.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit())
            .output()
            .context("running roomcast fixture")?;
        if !out.status.success() {
            bail!("roomcast fixture failed ({})", out.status);
        }
        let fixture: Fixture =
            serde_json::from_slice(&out.stdout).context("decoding the fixture document")?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(bin)
            .arg("serve")
            .args(common)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting roomcast serve")?;
        let mut server = Roomcast {
            child: None,
            stdout: None,
            dir: dir.to_path_buf(),
            fixture,
        };
        let stdout = child.stdout.take().context("no stdout")?;
        server.child = Some(child);
        // The first line says it listens; nothing is accepted before.
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // Keep reading what it prints: a closed pipe would kill it.
        server.stdout = Some(std::thread::spawn(move || {
            std::io::copy(&mut stdout, &mut std::io::sink())
        }));
        if !line.contains("listening") {
            // The log goes with the data directory when `server` drops.
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("roomcast serve did not start: {line:?}\n{log}");
        }
        Ok(server)
    }
}

impl Drop for Roomcast {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.stdout.take() {
            let _ = reader.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// User + system CPU seconds of a process, from its `stat` file
/// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
pub fn cpu_secs(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces: count after its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("temporary directory path is not UTF-8")
}
