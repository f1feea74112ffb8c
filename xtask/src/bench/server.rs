//! The server under test: Roomcast started by the bench (release build,
//! temporary data directory; SQLite and the in-memory layer, or PostgreSQL
//! and Redis on one or two nodes), or any server described by a FIXTURE.md
//! document (`--fixture FILE`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use roomcast_broadcast::testing::PrivateCluster;
use roomcast_storage::postgres::TestDatabase;
use serde::Deserialize;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// `docs/fixture.md`: all a load tool may know about a server.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    pub name: String,
    pub ws_base: String,
    pub cookie_name: String,
    pub origin: String,
    pub rooms: Vec<FixtureRoom>,
    /// Not in FIXTURE.md: the other nodes of a cluster (`--setup two-nodes`,
    /// or `--more-ws-bases` with `--fixture`). Member `m` of a room connects
    /// to node `m % nodes`.
    #[serde(skip)]
    pub more_ws_bases: Vec<String>,
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

    /// Every node the members connect to, `ws_base` first.
    pub fn nodes(&self) -> anyhow::Result<Vec<Endpoint>> {
        std::iter::once(&self.ws_base)
            .chain(&self.more_ws_bases)
            .map(|base| {
                Ok(Endpoint {
                    ws_base: base.clone(),
                    addr: ws_addr(base)?,
                })
            })
            .collect()
    }
}

/// One node of the server under test.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub ws_base: String,
    pub addr: SocketAddr,
}

/// The node room member `m` uses.
pub fn node_of(nodes: &[Endpoint], m: usize) -> &Endpoint {
    &nodes[m % nodes.len()]
}

/// The socket address of a `ws://host:port/...` URL (loopback only).
fn ws_addr(ws_base: &str) -> anyhow::Result<SocketAddr> {
    let rest = ws_base
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

/// How the bench runs Roomcast (`--setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The embedded default: SQLite and the in-memory layer, one node.
    Sqlite,
    /// PostgreSQL and Redis, one node.
    Postgres,
    /// Two nodes sharing PostgreSQL and Redis; members alternate nodes, so
    /// most deliveries cross Redis.
    TwoNodes,
    /// [`Setup::TwoNodes`] on a private three-master Redis Cluster (each
    /// primary with a replica) started for the run, instead of one Redis.
    TwoNodesCluster,
    /// Not Roomcast: the trivial in-memory fan-out server of
    /// [`super::trivial`], the ceiling to compare with.
    Trivial,
}

impl std::str::FromStr for Setup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" => Ok(Self::Postgres),
            "two-nodes" => Ok(Self::TwoNodes),
            "two-nodes-cluster" => Ok(Self::TwoNodesCluster),
            "trivial" => Ok(Self::Trivial),
            other => Err(format!(
                "unknown setup {other:?}: sqlite, postgres, two-nodes, two-nodes-cluster or trivial"
            )),
        }
    }
}

impl Setup {
    fn nodes(self) -> usize {
        match self {
            Setup::TwoNodes | Setup::TwoNodesCluster => 2,
            Setup::Sqlite | Setup::Postgres | Setup::Trivial => 1,
        }
    }

    /// The suffix of the run's name, so result files say what ran.
    fn label(self) -> &'static str {
        match self {
            Setup::Sqlite | Setup::Trivial => "",
            Setup::Postgres => "+postgres+redis",
            Setup::TwoNodes => "x2+postgres+redis",
            Setup::TwoNodesCluster => "x2+postgres+redis-cluster",
        }
    }
}

/// Where the services of the `postgres` and `two-nodes` setups are.
#[derive(Debug, Clone)]
pub struct Services {
    /// A database on the PostgreSQL server with the right to create
    /// databases; the bench makes a fresh one per run and drops it after.
    pub postgres_admin_url: String,
    /// Channel names get a fresh prefix per run.
    pub redis_url: String,
}

/// One `roomcast serve` process, stopped (SIGTERM, then kill) on drop.
#[derive(Debug)]
struct Node {
    child: Child,
    /// Drains the server's stdout until it exits.
    stdout: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stdout.take() {
            let _ = reader.join();
        }
    }
}

/// The Roomcast nodes this bench started, with their data directory and
/// (for PostgreSQL) their database, all removed on drop.
#[derive(Debug)]
pub struct Roomcast {
    // Field order is drop order: nodes stop before their database and
    // their Redis Cluster go.
    nodes: Vec<Node>,
    database: Option<TestDatabase>,
    cluster: Option<PrivateCluster>,
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

    /// Every server process whose resources the run counts.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Target::Started(r) => r.nodes.iter().map(|n| n.child.id()).collect(),
            Target::External { pid, .. } => pid.iter().copied().collect(),
        }
    }

    /// The servers' resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&pid| rss_kib(pid)).sum()
    }

    /// CPU seconds (user + system) the servers have used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        pids.iter()
            .map(|pid| cpu_secs(&format!("/proc/{pid}/stat")))
            .sum()
    }

    pub fn name(&self) -> &str {
        &self.fixture().name
    }

    /// CPU seconds used so far by each PostgreSQL backend serving the run's
    /// database (the writers' and the pool's connections; not the
    /// instance's shared background processes, which serve every database).
    /// `None` without a database of ours.
    pub async fn database_cpu(&self) -> Option<HashMap<u32, f64>> {
        let Target::Started(Roomcast {
            database: Some(db), ..
        }) = self
        else {
            return None;
        };
        let mut conn = PgConnection::connect(db.url()).await.ok()?;
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut conn)
        .await
        .ok()?;
        let _ = conn.close().await;
        Some(
            pids.into_iter()
                .filter_map(|pid| {
                    let pid = u32::try_from(pid).ok()?;
                    Some((pid, cpu_secs(&format!("/proc/{pid}/stat"))?))
                })
                .collect(),
        )
    }
}

/// CPU seconds the database backends used between two [`Target::database_cpu`]
/// readings (a backend that started in between counts from zero).
pub fn database_cpu_used(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, secs)| secs - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Builds the server in release mode once per bench invocation.
pub fn build_roomcast() -> anyhow::Result<PathBuf> {
    // A/B runs: another build of Roomcast (say, main's) under the same load.
    if let Some(bin) = std::env::var_os("ROOMCAST_BENCH_BIN") {
        return Ok(PathBuf::from(bin));
    }
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

/// The per-user limits a started Roomcast runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    /// Off (`ROOMCAST_RATE_LIMIT=0`, `ROOMCAST_MAX_CONNECTIONS_PER_USER=0`):
    /// a bench user sends far beyond what one person may.
    Off,
    /// The limiters run at this many messages a second (and bursts of as
    /// many) with the default cap of sockets per user, which one socket
    /// per bench user never reaches: what checking them costs, without
    /// their refusals (`ROOMCAST_BENCH_RATE_LIMIT=N`).
    High(u32),
    /// Roomcast's defaults, as in production (the soak).
    Defaults,
}

impl Limits {
    /// `High(N)` with `ROOMCAST_BENCH_RATE_LIMIT=N` set, else `Off`.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("ROOMCAST_BENCH_RATE_LIMIT") {
            Err(_) => Ok(Limits::Off),
            Ok(n) => Ok(Limits::High(n.parse().with_context(|| {
                format!("ROOMCAST_BENCH_RATE_LIMIT={n:?} is not a number")
            })?)),
        }
    }

    /// What to say in the run's name.
    fn label(self) -> &'static str {
        match self {
            Limits::Off => "",
            Limits::High(_) => "+limits-high",
            Limits::Defaults => "+limits-default",
        }
    }

    fn apply(self, serve: &mut Command) {
        match self {
            Limits::Off => {
                serve
                    .env("ROOMCAST_RATE_LIMIT", "0")
                    .env("ROOMCAST_MAX_CONNECTIONS_PER_USER", "0");
            }
            Limits::High(rate) => {
                serve
                    .env("ROOMCAST_RATE_LIMIT", rate.to_string())
                    .env("ROOMCAST_RATE_BURST", rate.to_string());
            }
            Limits::Defaults => {
                for name in [
                    "ROOMCAST_RATE_LIMIT",
                    "ROOMCAST_RATE_BURST",
                    "ROOMCAST_MAX_CONNECTIONS_PER_USER",
                ] {
                    serve.env_remove(name);
                }
            }
        }
    }
}

impl Roomcast {
    /// Seeds `rooms` x `members` with `roomcast fixture`, then serves with
    /// `limits`.
    pub async fn start(
        bin: &Path,
        setup: Setup,
        services: &Services,
        rooms: usize,
        members: usize,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-bench-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let database = match setup {
            Setup::Sqlite | Setup::Trivial => None,
            Setup::Postgres | Setup::TwoNodes | Setup::TwoNodesCluster => Some(
                TestDatabase::create(&services.postgres_admin_url)
                    .await
                    .context("creating the run's PostgreSQL database")?,
            ),
        };
        let cluster = match setup {
            Setup::TwoNodesCluster => Some(PrivateCluster::start().await),
            _ => None,
        };
        let mut server = Roomcast {
            nodes: Vec::new(),
            database,
            cluster,
            dir,
            fixture: Fixture {
                name: String::new(),
                ws_base: String::new(),
                cookie_name: String::new(),
                origin: String::new(),
                rooms: Vec::new(),
                more_ws_bases: Vec::new(),
            },
        };
        // From here on, dropping `server` cleans up whatever was started.
        if setup == Setup::Trivial {
            server.launch_trivial(rooms, members)?;
        } else {
            server.launch(bin, setup, services, rooms, members, limits)?;
        }
        Ok(server)
    }

    /// Starts `xtask trivial-server`, which prints its fixture first.
    fn launch_trivial(&mut self, rooms: usize, members: usize) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let mut child = Command::new(exe)
            .args(["trivial-server", "--rooms", &rooms.to_string()])
            .args(["--members", &members.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the trivial server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.nodes.push(Node {
            child,
            stdout: None,
        });
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        self.fixture = serde_json::from_str(&line).context("decoding the trivial fixture")?;
        if let Some(node) = self.nodes.last_mut() {
            node.stdout = Some(std::thread::spawn(move || {
                std::io::copy(&mut stdout, &mut std::io::sink())
            }));
        }
        Ok(())
    }

    fn launch(
        &mut self,
        bin: &Path,
        setup: Setup,
        services: &Services,
        rooms: usize,
        members: usize,
        limits: Limits,
    ) -> anyhow::Result<()> {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("rcbench:{}:", uuid::Uuid::new_v4().simple());
        let binds = (0..setup.nodes())
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dir = path_str(&self.dir)?.to_owned();
        let database_url = self.database.as_ref().map(|d| d.url().to_owned());
        // Every command of the run: same data, same secret.
        let command = |sub: &str, bind: &str| {
            let mut c = Command::new(bin);
            c.arg(sub)
                .args(["--data-dir", &dir, "--bind", bind])
                .env("ROOMCAST_JWT_SECRET", &secret)
                .env("RUST_LOG", "warn");
            if let Some(url) = &database_url {
                c.env("DATABASE_URL", url);
            }
            c
        };
        let out = command("fixture", &binds[0])
            .args([
                "--rooms",
                &rooms.to_string(),
                "--members",
                &members.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()
            .context("running roomcast fixture")?;
        if !out.status.success() {
            bail!("roomcast fixture failed ({})", out.status);
        }
        let mut fixture: Fixture =
            serde_json::from_slice(&out.stdout).context("decoding the fixture document")?;
        fixture.name.push_str(setup.label());
        fixture.name.push_str(limits.label());
        for (i, bind) in binds.iter().enumerate() {
            let log_path = self.dir.join(format!("server-{i}.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut serve = command("serve", bind);
            // Every node accepts the page origin the fixture names.
            serve.env("ROOMCAST_ALLOWED_ORIGINS", &fixture.origin);
            limits.apply(&mut serve);
            if setup != Setup::Sqlite {
                let redis_url = match &self.cluster {
                    Some(cluster) => cluster.url(),
                    None => services.redis_url.clone(),
                };
                serve
                    .env("REDIS_URL", &redis_url)
                    .env("ROOMCAST_REDIS_PREFIX", &prefix);
            }
            let mut child = serve
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .context("starting roomcast serve")?;
            let stdout = child.stdout.take().context("no stdout")?;
            self.nodes.push(Node {
                child,
                stdout: None,
            });
            // The first line says it listens; nothing is accepted before.
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            // Keep reading what it prints: a closed pipe would kill it.
            if let Some(node) = self.nodes.last_mut() {
                node.stdout = Some(std::thread::spawn(move || {
                    std::io::copy(&mut stdout, &mut std::io::sink())
                }));
            }
            if !line.contains("listening") {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("roomcast serve did not start: {line:?}\n{log}");
            }
            if i > 0 {
                fixture.more_ws_bases.push(format!("ws://{bind}/ws/chat"));
            }
        }
        self.fixture = fixture;
        Ok(())
    }
}

impl Drop for Roomcast {
    fn drop(&mut self) {
        // Stop the nodes before the database and the folder go.
        self.nodes.clear();
        self.database.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setups_parse_by_name_and_refuse_others_clearly() {
        assert_eq!("two-nodes".parse::<Setup>(), Ok(Setup::TwoNodes));
        assert_eq!(
            "two-nodes-cluster".parse::<Setup>(),
            Ok(Setup::TwoNodesCluster)
        );
        assert_eq!("trivial".parse::<Setup>(), Ok(Setup::Trivial));
        let err = "mysql".parse::<Setup>().expect_err("unknown setup");
        assert!(
            err.contains("sqlite, postgres, two-nodes, two-nodes-cluster or trivial"),
            "{err}"
        );
        assert_eq!(Setup::TwoNodes.nodes(), 2);
    }

    #[test]
    fn members_alternate_between_a_clusters_nodes() {
        let fixture = Fixture {
            name: "x".into(),
            ws_base: "ws://127.0.0.1:1/ws/chat".into(),
            cookie_name: "JWT".into(),
            origin: "http://127.0.0.1:1".into(),
            rooms: Vec::new(),
            more_ws_bases: vec!["ws://127.0.0.1:2/ws/chat".into()],
        };
        let nodes = fixture.nodes().expect("loopback nodes");
        let ports: Vec<u16> = (0..4).map(|m| node_of(&nodes, m).addr.port()).collect();
        assert_eq!(ports, vec![1, 2, 1, 2]);
        let remote = Fixture {
            ws_base: "ws://192.0.2.1:1/ws/chat".into(),
            more_ws_bases: Vec::new(),
            ..fixture
        };
        assert!(remote.nodes().is_err(), "only loopback servers are driven");
    }
}
