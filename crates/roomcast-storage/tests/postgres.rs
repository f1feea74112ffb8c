//! The repository conformance suite on PostgreSQL: the machine's server at
//! 127.0.0.1:5432 (user postgres, trust auth), or the server
//! `ROOMCAST_TEST_PG_URL` names. Every test gets a database of its own,
//! dropped afterwards, so no test depends on another's rows.

use std::sync::Arc;

use roomcast_storage::postgres::TestDatabase;
use roomcast_storage::{PgStore, Storage};

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
/// connection that sends the next `COMMIT`: after the server answered it
/// (the commit happened, the client never hears of it), or before the
/// server sees it (nothing is stored, and the client cannot know that).
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

        /// Cuts the next connection to send a `COMMIT`.
        pub fn arm(&self, cut: Cut) {
            self.armed.store(cut as u8, Ordering::SeqCst);
        }
    }

    async fn pipe(client: TcpStream, server: TcpStream, armed: Arc<AtomicU8>) {
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        let committing = Arc::new(AtomicBool::new(false));
        let sent = committing.clone();
        let up = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                // The simple-query message sqlx sends to commit.
                if chunk.windows(7).any(|w| w == b"COMMIT\0") {
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
        use roomcast_domain::{RoomSlug, Username};
        use roomcast_storage::{NewRoom, NewUser};

        let admin = admin_url();
        if !admin.contains("127.0.0.1:5432") {
            eprintln!("skipped: the proxy only fronts 127.0.0.1:5432");
            return None;
        }
        let db = TestDatabase::create(&admin)
            .await
            .expect("create a test database");
        let direct: Storage = Arc::new(PgStore::open(db.url()).await.expect("open"));
        let host = direct
            .create_user(NewUser {
                username: Username::parse("alice").expect("name"),
                name: "Alice".into(),
                email: None,
                password_hash: None,
            })
            .await
            .expect("user");
        let room = direct
            .create_room(NewRoom {
                host: host.id,
                slug: RoomSlug::parse("doubt").expect("slug"),
                name: "doubt".into(),
                description: String::new(),
                visibility: roomcast_domain::Visibility::Private,
            })
            .await
            .expect("room")
            .id;
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
