//! The embedded default backend: one SQLite file in WAL mode, so the server
//! runs with no database service at all.
//!
//! Reads go through a small pool (WAL lets them run beside the writer);
//! message writes go through the group-commit [`writer`]; rare writes
//! (accounts, rooms, participants) use the pool, and SQLite's busy timeout
//! orders them with the writer.

mod credentials;

mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use roomcast_domain::{
    Event, Message, MessageBody, MessageId, Room, RoomId, RoomSlug, Seq, Timestamp, User, UserId,
    Username,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use self::writer::{DatabaseFile, Writer};
use crate::rows::{self, ADMISSION_COLUMNS, EVENT_COLUMNS, MESSAGE_COLUMNS, ROOM_COLUMNS};
use crate::write::{PendingWrite, WriteOp, WriteOutcome};
use crate::{
    Admission, CommitPolicy, MessageRepository, NewMessage, NewRoom, NewUser, Posted,
    RoomRepository, RoomSeed, SeededRoom, StorageError, Store, UserRepository,
};

type Result<T> = std::result::Result<T, StorageError>;

/// How long a call waits for a pooled connection or a lock before it fails
/// with `Unavailable`: fail fast, never the 30 s default.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The SQLite backend.
#[derive(Debug)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    writer: Writer,
    /// Checkpoints the WAL off the commit path; ends with the store.
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at a `sqlite:` URL.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, CommitPolicy::default()).await
    }

    /// [`open`](Self::open) with another commit policy (benchmarks).
    pub async fn open_with(url: &str, policy: CommitPolicy) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::Unsupported(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            // Small pages for new databases: a commit writes every page it
            // dirtied to the WAL, whole, and a batch of posts to many rooms
            // dirties many index pages. 1 KiB pages cut that volume about
            // fourfold; on this VM's disk the fsync stalls it caused had
            // capped saturation near 30,000-40,000 deliveries/s (4 KiB pages)
            // against 50,000-70,000 with 1 KiB (cargo xtask bench saturation).
            .page_size(1024)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(StorageError::unavailable)?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StorageError::unavailable)?;
        // The writer has a connection of its own, which never checkpoints:
        // a background task does, in PASSIVE mode, off the commit path.
        let file = DatabaseFile {
            path: options.get_filename().to_owned(),
            in_memory: url.contains(":memory:") || url.contains("mode=memory"),
        };
        let writer = Writer::start(file, BUSY_TIMEOUT, policy).await?;
        let checkpointer = tokio::spawn(checkpoint_forever(pool.clone()));
        Ok(Self {
            pool,
            writer,
            checkpointer,
        })
    }

    /// Opens the database file `path`.
    pub async fn open_file(path: &std::path::Path) -> Result<Self> {
        Self::open(&format!("sqlite://{}", path.display())).await
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.writer.submit(op).await
    }

    async fn room_where(&self, clause: &str, binds: &[Uuid]) -> Result<Vec<Room>> {
        let sql =
            format!("SELECT {ROOM_COLUMNS} FROM rooms r JOIN users h ON h.id = r.host_id {clause}");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(rows::room).collect()
    }
}

/// Copies committed WAL frames into the database file, periodically.
async fn checkpoint_forever(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint failed; will retry");
        }
    }
}

/// Maps a database error to a storage error: unique violations are
/// conflicts, everything else means the database failed us.
pub(super) fn db(e: sqlx::Error) -> StorageError {
    if let Some(d) = e.as_database_error()
        && d.is_unique_violation()
    {
        let msg = d.message();
        return StorageError::Conflict(if msg.contains("users.email") {
            "email"
        } else if msg.contains("users.username") {
            "username"
        } else if msg.contains("rooms.") {
            "room"
        } else {
            "unique"
        });
    }
    StorageError::unavailable(e)
}

pub(super) fn now_micros() -> i64 {
    Timestamp::now().unix_micros()
}

#[async_trait]
impl UserRepository for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let id = UserId::new();
        sqlx::query(
            "INSERT INTO users (id, username, email, name, avatar, password_hash, created_at) \
             VALUES (?, ?, ?, ?, NULL, ?, ?)",
        )
        .bind(Uuid::from(id))
        .bind(new.username.as_str())
        .bind(new.email.as_deref())
        .bind(&new.name)
        .bind(new.password_hash.as_deref())
        .bind(now_micros())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(User {
            id,
            username: new.username,
            name: new.name,
            avatar: None,
        })
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, username, name, avatar FROM users WHERE id = ?")
            .bind(Uuid::from(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, username, name, avatar FROM users WHERE username = ?")
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::user).transpose()
    }
}

#[async_trait]
impl RoomRepository for SqliteStore {
    async fn create_room(&self, new: NewRoom) -> Result<Room> {
        let id = RoomId::new();
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO rooms (id, host_id, slug, name, description, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(Uuid::from(id))
        .bind(Uuid::from(new.host))
        .bind(new.slug.as_str())
        .bind(&new.name)
        .bind(&new.description)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match db(e) {
            StorageError::Unavailable(e) if e.to_string().contains("FOREIGN KEY") => {
                StorageError::NotFound
            }
            other => other,
        })?;
        sqlx::query("INSERT INTO participants (room_id, user_id, joined_at) VALUES (?, ?, ?)")
            .bind(Uuid::from(id))
            .bind(Uuid::from(new.host))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.room_where("WHERE r.id = ?", &[Uuid::from(id)])
            .await?
            .pop()
            .ok_or(StorageError::NotFound)
    }

    async fn room_by_address(&self, host: &Username, slug: &RoomSlug) -> Result<Option<Room>> {
        let sql = format!(
            "SELECT {ROOM_COLUMNS} FROM rooms r JOIN users h ON h.id = r.host_id \
             WHERE h.username = ? AND r.slug = ?"
        );
        let row = sqlx::query(&sql)
            .bind(host.as_str())
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::room).transpose()
    }

    async fn is_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM participants WHERE room_id = ? AND user_id = ?")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn admission(&self, user: UserId, host: &Username, slug: &RoomSlug) -> Result<Admission> {
        let sql = format!(
            "SELECT {ADMISSION_COLUMNS} FROM users u \
             LEFT JOIN users h ON h.username = ? \
             LEFT JOIN rooms r ON r.host_id = h.id AND r.slug = ? \
             WHERE u.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(host.as_str())
            .bind(slug.as_str())
            .bind(Uuid::from(user))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        rows::admission(row.as_ref())
    }

    async fn add_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO participants (room_id, user_id, joined_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::from(room))
        .bind(Uuid::from(user))
        .bind(now_micros())
        .execute(&self.pool)
        .await
        .map_err(|e| match db(e) {
            StorageError::Unavailable(e) if e.to_string().contains("FOREIGN KEY") => {
                StorageError::NotFound
            }
            other => other,
        })?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM participants WHERE room_id = ? AND user_id = ?")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn participants(&self, room: RoomId) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT u.id, u.username, u.name, u.avatar FROM participants p \
             JOIN users u ON u.id = p.user_id WHERE p.room_id = ? ORDER BY u.username",
        )
        .bind(Uuid::from(room))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(rows::user).collect()
    }

    async fn rooms_of(&self, user: UserId) -> Result<Vec<Room>> {
        self.room_where(
            "JOIN participants me ON me.room_id = r.id WHERE me.user_id = ? ORDER BY r.created_at DESC",
            &[Uuid::from(user)],
        )
        .await
    }

    async fn seed_rooms(&self, seeds: &[RoomSeed]) -> Result<Vec<SeededRoom>> {
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut out = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let mut members = Vec::with_capacity(seed.members.len());
            for name in std::iter::once(&seed.host).chain(&seed.members) {
                sqlx::query(
                    "INSERT INTO users (id, username, name, created_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (username) DO NOTHING",
                )
                .bind(Uuid::from(UserId::new()))
                .bind(name.as_str())
                .bind(name.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                let row =
                    sqlx::query("SELECT id, username, name, avatar FROM users WHERE username = ?")
                        .bind(name.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                members.push(rows::user(&row)?);
            }
            let host = members.remove(0);
            sqlx::query(
                "INSERT INTO rooms (id, host_id, slug, name, description, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, '', ?, ?) ON CONFLICT (host_id, slug) DO NOTHING",
            )
            .bind(Uuid::from(RoomId::new()))
            .bind(Uuid::from(host.id))
            .bind(seed.slug.as_str())
            .bind(seed.slug.as_str())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let room_id: Uuid = sqlx::query("SELECT id FROM rooms WHERE host_id = ? AND slug = ?")
                .bind(Uuid::from(host.id))
                .bind(seed.slug.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .get(0);
            for user in std::iter::once(&host).chain(&members) {
                sqlx::query(
                    "INSERT INTO participants (room_id, user_id, joined_at) VALUES (?, ?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(room_id)
                .bind(Uuid::from(user.id))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            // The host is a member only if the seed lists them.
            if seed.members.contains(&host.username) {
                members.retain(|m| m.id != host.id);
                members.insert(0, host);
            }
            out.push((RoomId::from_uuid(room_id), members));
        }
        tx.commit().await.map_err(db)?;
        let mut seeded = Vec::with_capacity(out.len());
        for (room_id, members) in out {
            let room = self
                .room_where("WHERE r.id = ?", &[Uuid::from(room_id)])
                .await?
                .pop()
                .ok_or(StorageError::NotFound)?;
            seeded.push(SeededRoom { room, members });
        }
        Ok(seeded)
    }
}

#[async_trait]
impl MessageRepository for SqliteStore {
    async fn post_message(&self, new: NewMessage) -> Result<Posted> {
        self.write(WriteOp::Post(new)).await?.posted()
    }

    async fn edit_message(
        &self,
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    ) -> Result<Event> {
        self.write(WriteOp::Edit {
            room,
            author,
            id,
            body,
        })
        .await?
        .event()
    }

    async fn delete_message(&self, room: RoomId, author: UserId, id: MessageId) -> Result<Event> {
        self.write(WriteOp::Delete { room, author, id })
            .await?
            .event()
    }

    async fn queue_write(&self, op: WriteOp) -> Result<PendingWrite> {
        self.writer.queue(op).await
    }

    async fn events_since(&self, room: RoomId, after: Seq, limit: u32) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e JOIN users u ON u.id = e.user_id \
             WHERE e.room_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(Uuid::from(room))
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rows::event).collect()
    }

    async fn last_seq(&self, room: RoomId) -> Result<Seq> {
        let row = sqlx::query("SELECT last_seq FROM rooms WHERE id = ?")
            .bind(Uuid::from(room))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StorageError::NotFound)?;
        Ok(row.get::<i64, _>(0).max(0) as u64)
    }

    async fn first_kept_seq(&self, room: RoomId) -> Result<Seq> {
        Ok(self.log_bounds(room).await?.1)
    }

    async fn log_bounds(&self, room: RoomId) -> Result<(Seq, Seq)> {
        let row = sqlx::query(
            "SELECT last_seq, \
             COALESCE((SELECT MIN(seq) FROM events WHERE room_id = ?1), last_seq + 1) \
             FROM rooms WHERE id = ?1",
        )
        .bind(Uuid::from(room))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StorageError::NotFound)?;
        let read = |i: usize| {
            row.try_get::<i64, _>(i)
                .map_err(|e| StorageError::Corrupt(e.to_string()))
        };
        Ok((read(0)?.max(0) as u64, read(1)?.max(1) as u64))
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM events WHERE created_at < ?")
            .bind(before.unix_micros())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn history(
        &self,
        room: RoomId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let before_seq = match before {
            None => i64::MAX,
            Some(id) => sqlx::query(
                "SELECT seq FROM events WHERE room_id = ? AND message_id = ? AND action = 1",
            )
            .bind(Uuid::from(room))
            .bind(Uuid::from(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StorageError::NotFound)?
            .get::<i64, _>(0),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(Uuid::from(room))
            .bind(before_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut page = rows.iter().map(rows::message).collect::<Result<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn health(&self) -> Result<()> {
        // Reads may work while writes cannot: the writer thread is gone.
        self.writer.alive()?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
