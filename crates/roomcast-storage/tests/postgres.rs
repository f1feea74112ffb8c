//! The repository conformance suite on PostgreSQL: the machine's server at
//! 127.0.0.1:5432 (user postgres, trust auth), or the server
//! `ROOMCAST_TEST_PG_URL` names. Every test gets a database of its own,
//! dropped afterwards, so no test depends on another's rows.

use std::sync::Arc;

use roomcast_storage::postgres::TestDatabase;
use roomcast_storage::{PgStore, Storage, conformance};

fn admin_url() -> String {
    std::env::var("ROOMCAST_TEST_PG_URL").unwrap_or_else(|_| TestDatabase::DEFAULT_ADMIN_URL.into())
}

async fn fresh_pg() -> (Storage, TestDatabase) {
    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database (is PostgreSQL up on 127.0.0.1:5432?)");
    let store = PgStore::open(db.url()).await.expect("open postgres");
    (Arc::new(store), db)
}

roomcast_storage::conformance_tests!(fresh_pg());

/// Four stores on one database: four server processes' connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_handles_share_one_sequence() {
    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database");
    let mut handles: Vec<Storage> = Vec::new();
    for _ in 0..4 {
        handles.push(Arc::new(PgStore::open(db.url()).await.expect("open")));
    }
    roomcast_storage::conformance::several_handles_share_one_sequence(handles).await;
}

/// `connect` dispatches on the scheme, for both spellings PostgreSQL uses.
#[tokio::test]
async fn connect_opens_postgres_urls() {
    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database");
    let store = roomcast_storage::connect(db.url()).await.expect("connect");
    assert_eq!(store.backend(), "postgres");
    store.health().await.expect("healthy");
    let other = db.url().replacen("postgres://", "postgresql://", 1);
    let again = roomcast_storage::connect(&other).await.expect("connect");
    assert_eq!(again.backend(), "postgres");
}

/// A TCP proxy in front of PostgreSQL that, once armed, cuts the
/// connection that sends the next commit: after the server answered it
/// (the commit happened, the client never hears of it), or before the
/// server sees it (nothing is stored, and the client cannot know that).
/// A commit is a `COMMIT`, or a call of `roomcast_post_batch`, which
/// commits by itself.
mod cutting_proxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

    #[derive(Clone, Copy)]
    pub enum Cut {
        AfterCommit = 1,
        BeforeCommit = 2,
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub struct Proxy {
        pub port: u16,
        armed: Arc<AtomicU8>,
    }

    impl Proxy {
        pub async fn start(upstream: &'static str) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let armed = Arc::new(AtomicU8::new(0));
            let arm = armed.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    tokio::spawn(pipe(client, server, arm.clone()));
                }
            });
            Proxy { port, armed }
        }

        /// Cuts the next connection to send a commit.
        pub fn arm(&self, cut: Cut) {
            self.armed.store(cut as u8, Ordering::SeqCst);
        }
    }

    /// Finds the calls of `roomcast_post_batch` on one connection: sqlx
    /// prepares the statement once (`Parse`, naming it), then each call is
    /// a `Bind` of that name.
    #[derive(Default)]
    struct BatchCall {
        statement: Option<Vec<u8>>,
    }

    impl BatchCall {
        /// Whether the chunk calls the function; learns its statement name.
        fn is_in(&mut self, chunk: &[u8]) -> bool {
            let mut called = false;
            for (kind, body) in messages(chunk) {
                let mut fields = body.split(|&b| b == 0);
                match kind {
                    b'P' => {
                        let name = fields.next().unwrap_or_default();
                        let query = fields.next().unwrap_or_default();
                        if query.windows(19).any(|w| w == b"roomcast_post_batch") {
                            self.statement = Some(name.to_vec());
                        }
                    }
                    b'B' => {
                        let _portal = fields.next();
                        let name = fields.next().unwrap_or_default();
                        called |= self.statement.as_deref() == Some(name);
                    }
                    _ => {}
                }
            }
            called
        }
    }

    /// The frontend messages a chunk starts with: type byte, 4-byte length
    /// (itself included), body; it stops at what does not parse (the
    /// startup packets, a message cut across chunks).
    fn messages(mut chunk: &[u8]) -> Vec<(u8, &[u8])> {
        let mut found = Vec::new();
        while let [kind, a, b, c, d, rest @ ..] = chunk {
            let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            let Some(body) = len.checked_sub(4).and_then(|n| rest.get(..n)) else {
                break;
            };
            found.push((*kind, body));
            chunk = &rest[body.len()..];
        }
        found
    }

    async fn pipe(client: TcpStream, server: TcpStream, armed: Arc<AtomicU8>) {
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        let committing = Arc::new(AtomicBool::new(false));
        let sent = committing.clone();
        let up = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut batch_call = BatchCall::default();
            loop {
                let n = match client_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                // The simple-query message sqlx sends to commit, or the
                // batch function's call.
                if chunk.windows(7).any(|w| w == b"COMMIT\0") || batch_call.is_in(chunk) {
                    match armed.swap(0, Ordering::SeqCst) {
                        1 => sent.store(true, Ordering::SeqCst),
                        // Never forwarded: the server sees the connection
                        // end and rolls the transaction back.
                        2 => return,
                        _ => {}
                    }
                }
                if server_wr.write_all(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if committing.load(Ordering::SeqCst) {
                // The server answered the commit: drop the answer and the
                // connection.
                break;
            }
            if client_wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        up.abort();
    }
}

/// One room with its host, reached directly and through a cutting proxy;
/// `None` when `ROOMCAST_TEST_PG_URL` names a server other than the
/// machine's, which the proxy does not front.
struct ProxiedRoom {
    direct: Storage,
    proxied: Storage,
    proxy: cutting_proxy::Proxy,
    host: roomcast_domain::User,
    room: roomcast_domain::RoomId,
    _db: TestDatabase,
}

impl ProxiedRoom {
    async fn create() -> Option<Self> {
        let admin = admin_url();
        if !admin.contains("127.0.0.1:5432") {
            eprintln!("skipped: the proxy only fronts 127.0.0.1:5432");
            return None;
        }
        let db = TestDatabase::create(&admin)
            .await
            .expect("create a test database");
        let direct: Storage = Arc::new(PgStore::open(db.url()).await.expect("open"));
        let host = conformance::user(&direct, "alice").await;
        let room = conformance::room(&direct, &host, "doubt").await;
        let proxy = cutting_proxy::Proxy::start("127.0.0.1:5432").await;
        let proxied_url =
            db.url()
                .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
        let proxied: Storage = Arc::new(PgStore::open(&proxied_url).await.expect("open via proxy"));
        Some(Self {
            direct,
            proxied,
            proxy,
            host,
            room,
            _db: db,
        })
    }

    /// Posts `text` through the proxy.
    async fn post(
        &self,
        text: &str,
    ) -> Result<roomcast_storage::Posted, roomcast_storage::StorageError> {
        self.proxied
            .post_message(roomcast_storage::NewMessage {
                room_id: self.room,
                author: self.host.clone(),
                body: roomcast_domain::MessageBody::parse(text).expect("body"),
                client_id: None,
            })
            .await
    }
}

/// A commit whose answer is lost was stored all the same: the writer finds
/// that out and answers the post as stored (so it is broadcast), instead of
/// `unavailable` for a message that every later reader will see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_answered_as_stored() {
    let Some(t) = ProxiedRoom::create().await else {
        return;
    };
    t.proxy.arm(cutting_proxy::Cut::AfterCommit);
    let posted = t
        .post("was it stored?")
        .await
        .expect("a stored post is answered as stored, not unavailable");
    assert!(!posted.duplicate);
    assert_eq!(posted.event.seq, 1);

    let log = t
        .direct
        .events_since(t.room, roomcast_domain::Seq::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(log.len(), 1, "stored exactly once");
    assert_eq!(log[0].seq, 1);
    assert_eq!(log[0].message_id(), posted.event.message_id());

    // The writer goes on: the next post takes the next seq.
    let next = t.post("and this one").await.expect("post after");
    assert_eq!(next.event.seq, 2);
}

/// A commit cut off before the server saw it stored nothing: the writer
/// makes sure of that (after the old transaction has ended) and answers
/// `unavailable`, and nothing turns up later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_on_its_way_is_answered_unavailable() {
    let Some(t) = ProxiedRoom::create().await else {
        return;
    };
    t.proxy.arm(cutting_proxy::Cut::BeforeCommit);
    let refused = t.post("never stored").await;
    assert!(
        matches!(refused, Err(roomcast_storage::StorageError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        t.direct
            .events_since(t.room, roomcast_domain::Seq::ZERO, 10)
            .await
            .expect("read")
            .is_empty()
    );

    // Nothing half-done blocks the room: the next post is seq 1.
    let next = t.post("stored").await.expect("post after");
    assert_eq!(next.event.seq, 1);
}

/// The migrations before `version`, copied from `migrations/postgres` into
/// `dir`: the schema as a server of that time left it.
async fn migrator_before(version: i64, dir: &std::path::Path) -> sqlx::migrate::Migrator {
    let all = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/postgres");
    for entry in std::fs::read_dir(all).expect("the migrations directory") {
        let path = entry.expect("a migration").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let number = name.split('_').next().and_then(|n| n.parse::<i64>().ok());
        if number.is_some_and(|n| n < version) {
            std::fs::copy(&path, dir.join(name)).expect("copy a migration");
        }
    }
    sqlx::migrate::Migrator::new(dir)
        .await
        .expect("read the migrations")
}

/// Migration 0008 rewrites a log written before it into the partitioned
/// table: every event stays, byte for byte and with its seq, each room's
/// log lies in one partition, and the store carries on from there (next
/// seq, resume, history, idempotent sends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioning_the_log_keeps_every_event_and_its_seq() {
    use roomcast_domain::{MessageBody, Seq, Username};
    use roomcast_storage::NewMessage;
    use sqlx::{Connection, Executor, Row};

    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database");
    let old = tempfile::tempdir().expect("a directory");
    let mut conn = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connect");
    migrator_before(8, old.path())
        .await
        .run(&mut conn)
        .await
        .expect("the schema before 0008");
    // Three rooms with 40, 7 and no messages; every `new` event has a
    // clientId, and room 40's message 5 was edited.
    conn.execute(
        "WITH u AS (INSERT INTO users (id, username, created_at) \
             VALUES (gen_random_uuid(), 'alice', 0) RETURNING id) \
         INSERT INTO rooms (id, host_id, slug, name, created_at, updated_at, last_seq, visibility) \
             SELECT gen_random_uuid(), u.id, 'room-' || n, 'room', 0, 0, n, 'public' \
             FROM u, unnest(ARRAY[40, 7, 0]) n; \
         INSERT INTO participants (room_id, user_id, joined_at) SELECT id, host_id, 0 FROM rooms; \
         INSERT INTO messages (id, room_id, user_id, seq, body, created_at, updated_at) \
             SELECT gen_random_uuid(), r.id, r.host_id, s, 'message ' || s, s, s \
             FROM rooms r, generate_series(1, r.last_seq - 1) s; \
         INSERT INTO events (room_id, seq, action, message_id, user_id, body, created_at, updated_at, client_id) \
             SELECT room_id, seq, 1, id, user_id, body, created_at, updated_at, 'c' || seq FROM messages; \
         UPDATE messages SET body = 'edited', edited = TRUE WHERE seq = 5; \
         INSERT INTO events (room_id, seq, action, message_id, user_id, body, edited, created_at, updated_at) \
             SELECT m.room_id, r.last_seq, 2, m.id, m.user_id, 'edited', TRUE, 5, r.last_seq \
             FROM messages m JOIN rooms r ON r.id = m.room_id WHERE m.seq = 5;",
    )
    .await
    .expect("a log written before 0008");
    let digest = "SELECT count(*) AS n, md5(string_agg(e::text, ',' ORDER BY room_id, seq)) AS sum \
                  FROM events e";
    let before = conn.fetch_one(digest).await.expect("digest before");
    let before: (i64, String) = (before.get("n"), before.get("sum"));
    assert_eq!(before.0, 40 + 6 + 1, "the rows written");

    let store: Storage = Arc::new(
        PgStore::open(db.url())
            .await
            .expect("open migrates to 0008"),
    );

    let after = conn.fetch_one(digest).await.expect("digest after");
    assert_eq!(
        (after.get::<i64, _>("n"), after.get::<String, _>("sum")),
        before,
        "every event kept as it was"
    );
    let shape = conn
        .fetch_one(
            "SELECT c.relkind::text AS kind, \
             (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) AS partitions \
             FROM pg_class c WHERE c.relname = 'events'",
        )
        .await
        .expect("the table's shape");
    assert_eq!(shape.get::<String, _>("kind"), "p", "a partitioned table");
    assert_eq!(shape.get::<i64, _>("partitions"), 16);
    let spread: i64 = conn
        .fetch_one(
            "SELECT max(n) AS spread FROM \
             (SELECT count(DISTINCT tableoid) AS n FROM events GROUP BY room_id) r",
        )
        .await
        .expect("partitions per room")
        .get("spread");
    assert_eq!(spread, 1, "each room's log in one partition");

    let rooms = conn
        .fetch_all("SELECT id, last_seq FROM rooms ORDER BY last_seq DESC")
        .await
        .expect("rooms");
    let room = roomcast_domain::RoomId::from_uuid(rooms[0].get("id"));
    let alice = store
        .user_by_username(&Username::parse("alice").expect("name"))
        .await
        .expect("read")
        .expect("alice");
    let log = store.events_since(room, Seq::ZERO, 100).await.expect("log");
    let seqs: Vec<u64> = log.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "seqs contiguous");
    assert_eq!(store.last_seq(room).await.expect("last"), 40);

    let post = |body: &str, client_id: Option<&str>| NewMessage {
        room_id: room,
        author: alice.clone(),
        body: MessageBody::parse(body).expect("body"),
        client_id: client_id.map(|c| roomcast_domain::ClientId::parse(c).expect("client id")),
    };
    let next = store.post_message(post("after", None)).await.expect("post");
    assert_eq!(next.event.seq, 41, "the room's sequence goes on");
    let again = store
        .post_message(post("again", Some("c3")))
        .await
        .expect("repost");
    assert!(again.duplicate, "clientIds from before are still known");
    assert_eq!(again.event.seq, 3);
    let page = store.history(room, None, 3).await.expect("history");
    let bodies: Vec<&str> = page.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["message 38", "message 39", "after"]);
    for row in &rooms[1..] {
        let other = roomcast_domain::RoomId::from_uuid(row.get("id"));
        let last = u64::try_from(row.get::<i64, _>("last_seq")).expect("a seq");
        let log = store
            .events_since(other, Seq::ZERO, 100)
            .await
            .expect("log");
        let seqs: Vec<u64> = log.iter().map(|e| e.seq.get()).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "other rooms kept whole"
        );
    }
    let _ = conn.close().await;
}

/// With a read replica, history pages and participant lists read the
/// replica, and what must see the latest commit (resume's log reads)
/// reads the primary: shown on a real streaming replica whose replay is
/// paused, so it lags by every commit made meanwhile. A history page
/// before a message the replica has not replayed, and every read while
/// the replica is down, come from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_replica_serves_history_and_never_resume() {
    use roomcast_domain::{MessageBody, RoomSlug, Seq, Username, Visibility};
    use roomcast_storage::postgres::PrivatePostgres;
    use roomcast_storage::{CommitPolicy, NewMessage, NewRoom, NewUser};

    let Some(primary) = tokio::task::spawn_blocking(PrivatePostgres::start_new)
        .await
        .expect("start")
    else {
        eprintln!("skipped: initdb is not on the PATH, so no private PostgreSQL");
        return;
    };
    let primary = Arc::new(primary);
    let replica = {
        let primary = primary.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || primary.replica())
                .await
                .expect("replica"),
        )
    };
    let db = TestDatabase::create(&primary.url())
        .await
        .expect("create a database on the primary");
    let replica_url = primary.url_on(db.url(), &replica);

    let direct: Storage = Arc::new(PgStore::open(db.url()).await.expect("open"));
    let user = |name: &str| NewUser {
        username: Username::parse(name).expect("name"),
        name: name.into(),
        email: None,
        password_hash: None,
    };
    let alice = direct.create_user(user("alice")).await.expect("alice");
    let bob = direct.create_user(user("bob")).await.expect("bob");
    let room = direct
        .create_room(NewRoom {
            host: alice.id,
            slug: RoomSlug::parse("replicated").expect("slug"),
            name: "Replicated".into(),
            description: String::new(),
            visibility: Visibility::Public,
        })
        .await
        .expect("room")
        .id;
    let post = |text: &str| {
        let direct = direct.clone();
        let new = NewMessage {
            room_id: room,
            author: alice.clone(),
            body: MessageBody::parse(text).expect("body"),
            client_id: None,
        };
        async move { direct.post_message(new).await.expect("post") }
    };
    post("one").await;
    post("two").await;
    replica.caught_up_with(&primary).await;
    let store: Storage = Arc::new(
        PgStore::open_with_replica(db.url(), Some(&replica_url), CommitPolicy::default())
            .await
            .expect("open with a replica"),
    );

    // The replica stops replaying: from here it lags.
    replica.pause_replay();
    post("three").await;
    let four = post("four").await;
    direct
        .add_participant(room, bob.id)
        .await
        .expect("bob joins");

    let bodies = |page: Vec<roomcast_domain::Message>| -> Vec<String> {
        page.into_iter().map(|m| m.body).collect()
    };
    assert_eq!(
        bodies(store.history(room, None, 10).await.expect("history")),
        ["one", "two"],
        "the newest page comes from the replica, as it was when paused"
    );
    let names: Vec<String> = store
        .participants(room)
        .await
        .expect("participants")
        .into_iter()
        .map(|u| u.username.into_string())
        .collect();
    assert_eq!(names, ["alice"], "participants come from the replica");

    // Resume reads the primary: every event, whatever the replica has.
    let seqs: Vec<u64> = store
        .events_since(room, Seq::ZERO, 10)
        .await
        .expect("since")
        .iter()
        .map(|e| e.seq.get())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "resume never reads the lagging replica");
    assert_eq!(
        store.log_bounds(room).await.expect("bounds"),
        (Seq::new(4), Seq::new(1))
    );
    assert_eq!(store.last_seq(room).await.expect("last"), 4);
    assert!(store.is_participant(room, bob.id).await.expect("member"));

    // A page before a message the replica has not replayed: the primary's,
    // whole.
    assert_eq!(
        bodies(
            store
                .history(room, Some(four.event.message_id()), 10)
                .await
                .expect("page before four")
        ),
        ["one", "two", "three"]
    );

    // Caught up again, the replica serves the latest.
    replica.resume_replay();
    replica.caught_up_with(&primary).await;
    assert_eq!(
        bodies(store.history(room, None, 10).await.expect("history")),
        ["one", "two", "three", "four"]
    );

    // A replica that is down is read around, from the primary.
    {
        let replica = replica.clone();
        let stopped = tokio::task::spawn_blocking(move || replica.stop("fast"))
            .await
            .expect("stop");
        assert!(stopped.status.success(), "{stopped:?}");
    }
    post("five").await;
    assert_eq!(
        store.history(room, None, 10).await.expect("history").len(),
        5,
        "read from the primary while the replica is down"
    );
    assert_eq!(store.participants(room).await.expect("list").len(), 2);
}
