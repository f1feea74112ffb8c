//! Faults while clients chat (issue 13): a node killed with SIGKILL, Redis
//! frozen with SIGSTOP, PostgreSQL stopped and started again. Each time an
//! audit finds nothing lost: every message acknowledged to its sender is
//! delivered to every reader exactly once, in `seq` order, and stored once.
//!
//! The nodes are real `roomcast serve` processes of this package's binary,
//! so a SIGKILL is a crash (no flush, no close frames, no goodbye on Redis).
//! What gets paused or restarted is a private `redis-server` or PostgreSQL
//! of the test's own, never the machine's shared ones. The tests run one at
//! a time (they are slow and start several processes each) and wait
//! generously: they assert what happens, never how fast.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast_broadcast::testing::PrivateRedis;
use roomcast_storage::postgres::{PrivatePostgres, TestDatabase};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long anything may take before the test gives up: long, because the
/// machine may be busy, and because a fault test asserts outcomes only.
const PATIENCE: Duration = Duration::from_secs(90);
/// Members that post, and members that only read, in the one room.
const POSTERS: usize = 4;
const READERS: usize = 2;
/// Messages each poster gets acknowledged.
const PER_POSTER: usize = 40;
/// Between a poster's messages: about 6 a second, under the default limit
/// of 10 a second per user (the nodes run with the default limits).
const PACE: Duration = Duration::from_millis(150);

/// One fault test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------- nodes

/// A `roomcast serve` process, killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// SIGKILL: the process ends at once, the kernel closes its sockets.
    /// (By pid, so that the clients' tasks may keep the cluster borrowed.)
    fn kill(&self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL: {status}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The room every member of a test chats in, as `roomcast fixture` made it.
struct Room {
    path: String,
    origin: String,
    tokens: Vec<String>,
}

/// Nodes sharing one database, one channel layer and one JWT secret.
struct Cluster {
    dir: tempfile::TempDir,
    secret: String,
    database_url: String,
    /// `--database-read-url`: a replica for history and room reads.
    database_read_url: Option<String>,
    redis_url: String,
    prefix: String,
    nodes: Vec<Node>,
    room: Room,
}

impl Cluster {
    /// Seeds one room of `POSTERS + READERS` members, then starts `count`
    /// nodes with the default limits.
    fn start(count: usize, database_url: &str, redis_url: &str) -> Cluster {
        Self::start_reading_from(count, database_url, None, redis_url)
    }

    /// [`Cluster::start`], the nodes reading history from `read_url`.
    fn start_reading_from(
        count: usize,
        database_url: &str,
        read_url: Option<&str>,
        redis_url: &str,
    ) -> Cluster {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            secret: uuid::Uuid::new_v4().simple().to_string(),
            database_url: database_url.to_owned(),
            database_read_url: read_url.map(str::to_owned),
            redis_url: redis_url.to_owned(),
            prefix: format!("roomcast-faults:{}:", uuid::Uuid::new_v4().simple()),
            nodes: Vec::new(),
            room: Room {
                path: String::new(),
                origin: String::new(),
                tokens: Vec::new(),
            },
        };
        let out = cluster
            .command("fixture", ports[0])
            .args(["--rooms", "1", "--members"])
            .arg((POSTERS + READERS).to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("roomcast fixture runs");
        assert!(out.status.success(), "roomcast fixture: {}", out.status);
        let fixture: Value = serde_json::from_slice(&out.stdout).expect("fixture JSON");
        let room = &fixture["rooms"][0];
        cluster.room = Room {
            path: format!("{}/{}", text(&room["host"]), text(&room["slug"])),
            origin: text(&fixture["origin"]).to_owned(),
            tokens: room["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| text(&m["token"]).to_owned())
                .collect(),
        };
        for port in ports {
            let node = cluster.serve(port);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn command(&self, sub: &str, port: u16) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        c.arg(sub)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("ROOMCAST_JWT_SECRET", &self.secret)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "warn");
        if let Some(read_url) = &self.database_read_url {
            c.env("ROOMCAST_DATABASE_READ_URL", read_url);
        }
        c
    }

    /// The bodies of the room's newest history page (`GET .../messages`,
    /// the HTTP API), asked of node `n` as the room's first member.
    async fn history(&self, n: usize) -> Vec<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let addr = self.nodes[n].addr;
        let request = format!(
            "GET /api/rooms/{}/messages?limit=100 HTTP/1.1\r\nHost: {addr}\r\n\
             Cookie: JWT={}\r\nConnection: close\r\n\r\n",
            self.room.path, self.room.tokens[0]
        );
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("request");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("response");
        let response = String::from_utf8(response).expect("UTF-8");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        // The body may come in chunks: the JSON is between the first `{`
        // and the last `}`.
        let json = &body[body.find('{').expect("JSON")..=body.rfind('}').expect("JSON")];
        let page: Value = serde_json::from_str(json).expect("a history page");
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| text(&m["body"]).to_owned())
            .collect()
    }

    /// Starts a node and waits for its first line, which it prints once it
    /// accepts connections.
    fn serve(&self, port: u16) -> Node {
        let log = std::fs::File::create(self.dir.path().join(format!("node-{port}.log")))
            .expect("log file");
        let mut child = self
            .command("serve", port)
            .env("REDIS_URL", &self.redis_url)
            .env("ROOMCAST_REDIS_PREFIX", &self.prefix)
            .env("ROOMCAST_ALLOWED_ORIGINS", &self.room.origin)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("roomcast serve starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        assert!(
            line.contains("listening"),
            "node on {port} did not start: {line:?}\n{}",
            self.log(port)
        );
        // Keep reading what it prints: a closed pipe would end it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn log(&self, port: u16) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{port}.log")))
            .unwrap_or_default()
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// Member `m`, first on node `m % nodes`.
    fn member(&self, m: usize, progress: &Arc<Progress>) -> Member {
        Member {
            name: format!("m{m}"),
            token: self.room.tokens[m].clone(),
            path: self.room.path.clone(),
            origin: self.room.origin.clone(),
            nodes: self.addrs(),
            at: m % self.nodes.len(),
            ws: None,
            log: Vec::new(),
            faults: Vec::new(),
            pending: None,
            retried: HashSet::new(),
            acked: Vec::new(),
            unavailable: 0,
            rate_limited: 0,
            reconnects: 0,
            progress: Arc::clone(progress),
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().expect("a string field")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// -------------------------------------------------------------- members

/// What every member has done so far, for the test to time its fault.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    /// `unavailable` answers (each retried).
    unavailable: AtomicU64,
}

/// A client of the room that keeps its own audit trail: every stored event
/// it is delivered, and anything out of order or repeated.
struct Member {
    name: String,
    token: String,
    path: String,
    origin: String,
    nodes: Vec<SocketAddr>,
    /// The node it uses now; it moves on when that one fails.
    at: usize,
    ws: Option<Ws>,
    /// `(seq, body)` of every stored event delivered, in arrival order.
    log: Vec<(u64, String)>,
    /// Deliveries that broke the order: a gap or a repeat.
    faults: Vec<String>,
    /// The clientId awaiting its acknowledgement.
    pending: Option<String>,
    /// ClientIds sent more than once: more than one answer may come.
    retried: HashSet<String>,
    /// The clientIds acknowledged (the body of each is its clientId).
    acked: Vec<String>,
    /// Answers `unavailable` and `rate_limited`, each retried.
    unavailable: u64,
    rate_limited: u64,
    reconnects: u32,
    progress: Arc<Progress>,
}

/// What a frame meant to a member with a message pending.
enum Answer {
    Acked,
    Refused(String),
}

impl Member {
    fn last_seq(&self) -> u64 {
        self.log.last().map_or(0, |(seq, _)| *seq)
    }

    /// Connects (again) with `?since=` its last seq, trying each node in
    /// turn from the one it was on, until one accepts.
    async fn connect(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let addr = self.nodes[self.at];
            let url = format!(
                "ws://{addr}/ws/chat/{}?since={}",
                self.path,
                self.last_seq()
            );
            let mut request = url.into_client_request().expect("url");
            let headers = request.headers_mut();
            let cookie = format!("JWT={}", self.token);
            headers.insert("cookie", HeaderValue::from_str(&cookie).expect("cookie"));
            let origin = HeaderValue::from_str(&self.origin).expect("origin");
            headers.insert("origin", origin);
            let attempt = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::connect_async(request),
            );
            if let Ok(Ok((ws, _))) = attempt.await {
                self.ws = Some(ws);
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: no node accepted a connection for {PATIENCE:?}",
                self.name
            );
            self.at = (self.at + 1) % self.nodes.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next text frame, or `None` once the socket is gone (and then it
    /// is forgotten, to reconnect).
    async fn next_frame(&mut self) -> Option<Value> {
        if self.ws.is_none() {
            self.connect().await;
        }
        let ws = self.ws.as_mut().expect("connected");
        loop {
            match tokio::time::timeout(PATIENCE, ws.next()).await {
                Err(_) => panic!("{}: no frame for {PATIENCE:?}", self.name),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("JSON frames"));
                }
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => break,
                Ok(Some(Ok(_))) => continue,
            }
        }
        self.ws = None;
        self.reconnects += 1;
        None
    }

    /// Records a frame; says what it means for the pending message.
    fn handle(&mut self, frame: &Value) -> Option<Answer> {
        let pending = self.pending.as_deref();
        let client_id = frame["clientId"].as_str();
        let mine = pending.is_some() && client_id == pending;
        // The answer to a message sent again is its original event: an
        // acknowledgement, not a second delivery (it may come after the
        // replay on reconnecting already delivered and acknowledged it).
        let answer_to_retry = mine || client_id.is_some_and(|c| self.retried.contains(c));
        if frame["type"] == "chat_message" {
            let seq = frame["seq"].as_u64().expect("stored events have a seq");
            let last = self.last_seq();
            if seq == last + 1 {
                let body = frame["body"].as_str().unwrap_or_default().to_owned();
                self.log.push((seq, body));
            } else if !(answer_to_retry && seq <= last) {
                self.faults.push(format!("seq {seq} after {last}: {frame}"));
            }
            if mine && frame["action"] == "new" {
                return Some(Answer::Acked);
            }
        } else if frame.get("error").is_some() {
            if mine {
                return Some(Answer::Refused(text(&frame["code"]).to_owned()));
            }
            if answer_to_retry {
                return None;
            }
            self.faults
                .push(format!("an error for nothing pending: {frame}"));
        }
        None
    }

    /// Posts `client_id` (also its body) until it is acknowledged: after a
    /// refusal it waits a little, after a lost socket it reconnects; either
    /// way it sends again with the same clientId, as a client does.
    async fn post(&mut self, client_id: String) {
        self.pending = Some(client_id.clone());
        let frame = json!({"type": "text", "message": client_id, "clientId": client_id});
        let mut sends = 0;
        'resend: loop {
            if self.ws.is_none() {
                self.connect().await;
            }
            sends += 1;
            if sends > 1 {
                self.retried.insert(client_id.clone());
            }
            let ws = self.ws.as_mut().expect("connected");
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                self.ws = None;
                self.reconnects += 1;
                continue;
            }
            loop {
                let Some(frame) = self.next_frame().await else {
                    continue 'resend;
                };
                match self.handle(&frame) {
                    None => {}
                    Some(Answer::Acked) => {
                        self.pending = None;
                        self.acked.push(client_id);
                        self.progress.acked.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Answer::Refused(code)) => {
                        match code.as_str() {
                            "unavailable" => {
                                self.unavailable += 1;
                                self.progress.unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            "rate_limited" => self.rate_limited += 1,
                            other => panic!("{}: refused with {other}", self.name),
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'resend;
                    }
                }
            }
        }
    }

    /// A poster's part: `PER_POSTER` messages, paced.
    async fn chat(mut self) -> Member {
        for k in 0..PER_POSTER {
            self.post(format!("{}-{k}", self.name)).await;
            tokio::time::sleep(PACE).await;
        }
        self
    }

    /// A reader's part: reads as events come until told to stop.
    async fn follow(mut self, mut stop: watch::Receiver<bool>) -> Member {
        loop {
            let frame = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return self,
                frame = self.next_frame() => frame,
            };
            if let Some(frame) = frame {
                self.handle(&frame);
            }
        }
    }

    /// Reads until it has been delivered everything up to `last`.
    async fn catch_up(&mut self, last: u64) {
        while self.last_seq() < last {
            if let Some(frame) = self.next_frame().await {
                self.handle(&frame);
            }
        }
    }

    /// Replays the room from seq 0 on a fresh socket: the stored log.
    async fn replay(&mut self) -> u64 {
        loop {
            if let Some(frame) = self.next_frame().await {
                if frame["action"] == "synced" {
                    return frame["seq"].as_u64().expect("synced has a seq");
                }
                self.handle(&frame);
            }
        }
    }
}

// ---------------------------------------------------------------- a run

/// What a run left: every member, and the room's stored log.
struct Outcome {
    members: Vec<Member>,
    stored: Vec<(u64, String)>,
}

/// Starts the posters and the readers, runs `fault` alongside them (it
/// watches their progress), then audits.
async fn chat_through<F, Fut>(cluster: &Cluster, fault: F) -> Outcome
where
    F: FnOnce(Arc<Progress>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let progress = Arc::new(Progress::default());
    let (stop, stopped) = watch::channel(false);
    let posters: Vec<_> = (0..POSTERS)
        .map(|m| tokio::spawn(cluster.member(m, &progress).chat()))
        .collect();
    let readers: Vec<_> = (POSTERS..POSTERS + READERS)
        .map(|m| tokio::spawn(cluster.member(m, &progress).follow(stopped.clone())))
        .collect();
    fault(Arc::clone(&progress)).await;
    let mut members = Vec::new();
    for task in posters {
        members.push(task.await.expect("a poster"));
    }
    stop.send(true).expect("readers listen");
    for task in readers {
        members.push(task.await.expect("a reader"));
    }
    // The stored log, as a fresh client replays it from the start.
    let mut auditor = cluster.member(POSTERS + READERS - 1, &progress);
    auditor.at = cluster.nodes.len() - 1;
    let last = auditor.replay().await;
    assert_eq!(auditor.last_seq(), last, "the replay ends at `synced`");
    for member in &mut members {
        member.catch_up(last).await;
    }
    Outcome {
        members,
        stored: auditor.log,
    }
}

/// Every acknowledged message stored once; every member delivered the whole
/// log once, in seq order; nothing stored that nobody sent.
fn audit(outcome: &Outcome) {
    let expected: usize = POSTERS * PER_POSTER;
    let mut stored: Vec<&str> = outcome.stored.iter().map(|(_, b)| b.as_str()).collect();
    let seqs: Vec<u64> = outcome.stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "the stored log has no gap"
    );
    stored.sort_unstable();
    let mut acked: Vec<&str> = outcome
        .members
        .iter()
        .flat_map(|m| m.acked.iter().map(String::as_str))
        .collect();
    acked.sort_unstable();
    assert_eq!(acked.len(), expected, "every post acknowledged");
    assert_eq!(
        stored, acked,
        "each acknowledged message stored exactly once"
    );
    for m in &outcome.members {
        assert!(m.faults.is_empty(), "{}: {:?}", m.name, m.faults);
        assert_eq!(
            m.log, outcome.stored,
            "{} was delivered the stored log, once, in order",
            m.name
        );
    }
}

fn summary(outcome: &Outcome) -> String {
    outcome
        .members
        .iter()
        .map(|m| {
            format!(
                "{}: {} delivered, {} reconnects, {} unavailable, {} rate_limited",
                m.name,
                m.log.len(),
                m.reconnects,
                m.unavailable,
                m.rate_limited
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn until_acked(progress: &Progress, count: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while progress.acked.load(Ordering::Relaxed) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {} acknowledged",
            progress.acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Chats through `cluster` and SIGKILLs its first node once a third of
/// the messages are acknowledged: the fault that two tests share.
async fn chat_through_a_node_kill(cluster: &Cluster) -> Outcome {
    chat_through(cluster, |progress| {
        let node = &cluster.nodes[0];
        async move {
            until_acked(&progress, (POSTERS * PER_POSTER / 3) as u64).await;
            node.kill();
        }
    })
    .await
}

fn shared_redis_url() -> String {
    std::env::var("ROOMCAST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn shared_postgres_admin_url() -> String {
    std::env::var("ROOMCAST_TEST_PG_URL").unwrap_or_else(|_| TestDatabase::DEFAULT_ADMIN_URL.into())
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_conversation_loses_nothing_its_clients_resume_on_the_survivor() {
    let _one_at_a_time = SERIAL.lock().await;
    let database = TestDatabase::create(&shared_postgres_admin_url())
        .await
        .expect("a database on the shared PostgreSQL (is it up on 127.0.0.1:5432?)");
    let cluster = Cluster::start(2, database.url(), &shared_redis_url());
    let victim = cluster.nodes[0].addr;
    let outcome = chat_through_a_node_kill(&cluster).await;
    eprintln!("after SIGKILL: {}", summary(&outcome));
    audit(&outcome);
    for m in &outcome.members {
        assert_ne!(m.nodes[m.at], victim, "{} is on the surviving node", m.name);
    }
    let moved = outcome.members.iter().filter(|m| m.reconnects > 0).count();
    assert!(
        moved >= (POSTERS + READERS) / 2,
        "the killed node's clients reconnected: {}",
        summary(&outcome)
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_with_sigstop_then_thawed_loses_nothing_and_delivery_resumes() {
    let _one_at_a_time = SERIAL.lock().await;
    let database = TestDatabase::create(&shared_postgres_admin_url())
        .await
        .expect("a database on the shared PostgreSQL (is it up on 127.0.0.1:5432?)");
    let redis = PrivateRedis::start().await;
    let cluster = Cluster::start(2, database.url(), &redis.url());
    let outcome = chat_through(&cluster, |progress| {
        let redis = &redis;
        async move {
            until_acked(&progress, (POSTERS * PER_POSTER / 4) as u64).await;
            redis.pause().await;
            // Long enough for every client to have posted into the freeze
            // and for the nodes' Redis commands to time out.
            tokio::time::sleep(Duration::from_secs(6)).await;
            redis.resume().await;
        }
    })
    .await;
    eprintln!("after SIGSTOP/SIGCONT: {}", summary(&outcome));
    audit(&outcome);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_conversation_refuses_with_unavailable_loses_nothing_and_heals() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(pg) = PrivatePostgres::start_new() else {
        eprintln!("skipped: initdb is not on the PATH, so no private PostgreSQL to restart");
        return;
    };
    let pg = Arc::new(pg);
    let cluster = Cluster::start(2, &pg.url(), &shared_redis_url());
    let outcome = chat_through(&cluster, |progress| {
        let pg = Arc::clone(&pg);
        async move {
            until_acked(&progress, (POSTERS * PER_POSTER / 4) as u64).await;
            let refused_before = progress.unavailable.load(Ordering::Relaxed);
            let stopper = Arc::clone(&pg);
            let stopped = tokio::task::spawn_blocking(move || stopper.stop("fast"))
                .await
                .expect("pg_ctl stop");
            assert!(stopped.status.success(), "pg_ctl stop: {stopped:?}");
            // Down until writes have been refused a few times.
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while progress.unavailable.load(Ordering::Relaxed) < refused_before + 3 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no write was refused while PostgreSQL was down"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::task::spawn_blocking(move || pg.start())
                .await
                .expect("pg_ctl start");
        }
    })
    .await;
    eprintln!("after the PostgreSQL restart: {}", summary(&outcome));
    audit(&outcome);
    let refusals: u64 = outcome.members.iter().map(|m| m.unavailable).sum();
    assert!(
        refusals >= 3,
        "writes in the outage were refused as unavailable"
    );
    drop(cluster);
}

/// `--database-read-url` end to end: the nodes read history from a
/// streaming replica whose replay is paused, so it lags by every message.
/// Resume must not read it: one node is killed mid-conversation, its
/// clients resume on the survivor with `since`, and the audit (whose
/// replay reads `?since=0`) finds nothing missing. History does read it:
/// the newest page is the replica's (no message yet) until replay
/// resumes, then the primary's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lagging_read_replica_resume_misses_nothing_and_history_reads_the_replica() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(primary) = PrivatePostgres::start_new() else {
        eprintln!("skipped: initdb is not on the PATH, so no private PostgreSQL");
        return;
    };
    let replica = primary.replica();
    let database = TestDatabase::create(&primary.url())
        .await
        .expect("a database on the private primary");
    let read_url = primary.url_on(database.url(), &replica);
    let cluster =
        Cluster::start_reading_from(2, database.url(), Some(&read_url), &shared_redis_url());
    // The replica has the schema, the room and its members; then it stops.
    replica.caught_up_with(&primary).await;
    replica.pause_replay();

    let outcome = chat_through_a_node_kill(&cluster).await;
    eprintln!("with a paused replica: {}", summary(&outcome));
    audit(&outcome);
    assert!(
        outcome.members.iter().any(|m| m.reconnects > 0),
        "clients resumed on the survivor: {}",
        summary(&outcome)
    );

    assert_eq!(
        cluster.history(1).await,
        Vec::<String>::new(),
        "the newest history page comes from the replica, paused before any message"
    );
    replica.resume_replay();
    replica.caught_up_with(&primary).await;
    let stored: Vec<String> = outcome.stored.iter().map(|(_, b)| b.clone()).collect();
    let newest = stored[stored.len().saturating_sub(100)..].to_vec();
    assert_eq!(
        cluster.history(1).await,
        newest,
        "once caught up, the replica serves the whole log"
    );
    drop(cluster);
}
