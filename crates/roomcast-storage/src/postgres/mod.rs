//! The production backend: PostgreSQL through sqlx, for several server
//! processes sharing one database.
//!
//! Reads and rare writes (accounts, rooms, participants) go through a small
//! pool that fails fast: acquiring a connection waits at most
//! [`ACQUIRE_TIMEOUT`], never sqlx's 30 s default, so a request during an
//! outage gets `Unavailable` promptly. Message writes go through the
//! group-commit [`writer`], whose connections reconnect by themselves.

mod credentials;

mod scratch;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use roomcast_domain::{
    Event, Message, MessageBody, MessageId, Room, RoomId, RoomSlug, Seq, Timestamp, User, UserId,
    Username,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use uuid::Uuid;

pub use self::scratch::TestDatabase;
use self::writer::Writers;
use crate::rows::{self, ADMISSION_COLUMNS, EVENT_COLUMNS, MESSAGE_COLUMNS, ROOM_COLUMNS};
use crate::write::{ACTION_NEW, PendingWrite, WriteOp};
use crate::{
    Admission, CommitPolicy, MessageRepository, NewMessage, NewRoom, NewUser, Posted,
    RoomRepository, RoomSeed, SeededRoom, StorageError, Store, UserRepository,
};

type Result<T> = std::result::Result<T, StorageError>;

/// How long a call waits for a pooled connection (connecting included)
/// before it fails with `Unavailable`: fail fast, never the 30 s default.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pooled connections for reads and rare writes. Small on purpose: several
/// server processes share one database and its `max_connections`.
const POOL_SIZE: u32 = 8;
/// Idle pooled connections are closed after this, so a quiet node holds few.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The PostgreSQL backend.
#[derive(Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
    writers: Writers,
}

impl PgStore {
    /// Connects to and migrates the database at a `postgres://` URL.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, CommitPolicy::default()).await
    }

    /// [`open`](Self::open) with another commit policy (benchmarks).
    pub async fn open_with(url: &str, policy: CommitPolicy) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StorageError::Unsupported(format!("bad PostgreSQL URL: {e}")))?
            .application_name("roomcast");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            // A pooled connection is pinged before use, so connections
            // broken by a database restart are replaced, not handed out.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .map_err(StorageError::unavailable)?;
        // Concurrent starts are safe: sqlx holds an advisory lock while
        // migrating PostgreSQL.
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .map_err(StorageError::unavailable)?;
        let writers = Writers::start(&options, policy).await?;
        Ok(Self { pool, writers })
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

/// Maps a database error to a storage error: unique violations are
/// conflicts named after the rule (by constraint name, never by parsing
/// the message), a missing referenced row is `NotFound`, everything else
/// means the database failed us.
pub(super) fn db(e: sqlx::Error) -> StorageError {
    if let Some(d) = e.as_database_error() {
        match d.kind() {
            ErrorKind::UniqueViolation => {
                return StorageError::Conflict(match d.constraint() {
                    Some("users_username_key") => "username",
                    Some("users_email_key") => "email",
                    Some("rooms_host_slug_key") => "room",
                    _ => "unique",
                });
            }
            ErrorKind::ForeignKeyViolation => return StorageError::NotFound,
            _ => {}
        }
    }
    StorageError::unavailable(e)
}

pub(super) fn now_micros() -> i64 {
    Timestamp::now().unix_micros()
}

#[async_trait]
impl UserRepository for PgStore {
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let id = UserId::new();
        sqlx::query(
            "INSERT INTO users (id, username, email, name, avatar, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6)",
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
        let row = sqlx::query("SELECT id, username, name, avatar FROM users WHERE id = $1")
            .bind(Uuid::from(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, username, name, avatar FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::user).transpose()
    }
}

#[async_trait]
impl RoomRepository for PgStore {
    async fn create_room(&self, new: NewRoom) -> Result<Room> {
        let id = RoomId::new();
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO rooms (id, host_id, slug, name, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        .map_err(db)?;
        sqlx::query("INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(Uuid::from(id))
            .bind(Uuid::from(new.host))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.room_where("WHERE r.id = $1", &[Uuid::from(id)])
            .await?
            .pop()
            .ok_or(StorageError::NotFound)
    }

    async fn room_by_address(&self, host: &Username, slug: &RoomSlug) -> Result<Option<Room>> {
        let sql = format!(
            "SELECT {ROOM_COLUMNS} FROM rooms r JOIN users h ON h.id = r.host_id \
             WHERE h.username = $1 AND r.slug = $2"
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
        let row = sqlx::query("SELECT 1 FROM participants WHERE room_id = $1 AND user_id = $2")
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
             LEFT JOIN users h ON h.username = $1 \
             LEFT JOIN rooms r ON r.host_id = h.id AND r.slug = $2 \
             WHERE u.id = $3"
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
            "INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::from(room))
        .bind(Uuid::from(user))
        .bind(now_micros())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM participants WHERE room_id = $1 AND user_id = $2")
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
             JOIN users u ON u.id = p.user_id WHERE p.room_id = $1 ORDER BY u.username",
        )
        .bind(Uuid::from(room))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(rows::user).collect()
    }

    async fn rooms_of(&self, user: UserId) -> Result<Vec<Room>> {
        self.room_where(
            "JOIN participants me ON me.room_id = r.id WHERE me.user_id = $1 ORDER BY r.created_at DESC",
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
                    "INSERT INTO users (id, username, name, created_at) VALUES ($1, $2, $3, $4) \
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
                    sqlx::query("SELECT id, username, name, avatar FROM users WHERE username = $1")
                        .bind(name.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                members.push(rows::user(&row)?);
            }
            let host = members.remove(0);
            sqlx::query(
                "INSERT INTO rooms (id, host_id, slug, name, description, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, '', $5, $6) ON CONFLICT (host_id, slug) DO NOTHING",
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
            let room_id: Uuid =
                sqlx::query("SELECT id FROM rooms WHERE host_id = $1 AND slug = $2")
                    .bind(Uuid::from(host.id))
                    .bind(seed.slug.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?
                    .try_get(0)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            for user in std::iter::once(&host).chain(&members) {
                sqlx::query(
                    "INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3) \
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
                .room_where("WHERE r.id = $1", &[Uuid::from(room_id)])
                .await?
                .pop()
                .ok_or(StorageError::NotFound)?;
            seeded.push(SeededRoom { room, members });
        }
        Ok(seeded)
    }
}

#[async_trait]
impl MessageRepository for PgStore {
    async fn post_message(&self, new: NewMessage) -> Result<Posted> {
        self.writers.submit(WriteOp::Post(new)).await?.posted()
    }

    async fn edit_message(
        &self,
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    ) -> Result<Event> {
        self.writers
            .submit(WriteOp::Edit {
                room,
                author,
                id,
                body,
            })
            .await?
            .event()
    }

    async fn delete_message(&self, room: RoomId, author: UserId, id: MessageId) -> Result<Event> {
        self.writers
            .submit(WriteOp::Delete { room, author, id })
            .await?
            .event()
    }

    async fn queue_write(&self, op: WriteOp) -> Result<PendingWrite> {
        self.writers.queue(op).await
    }

    async fn events_since(&self, room: RoomId, after: Seq, limit: u32) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e JOIN users u ON u.id = e.user_id \
             WHERE e.room_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3"
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
        let row = sqlx::query("SELECT last_seq FROM rooms WHERE id = $1")
            .bind(Uuid::from(room))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StorageError::NotFound)?;
        let seq: i64 = row
            .try_get(0)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok(seq.max(0) as u64)
    }

    async fn first_kept_seq(&self, room: RoomId) -> Result<Seq> {
        Ok(self.log_bounds(room).await?.1)
    }

    async fn log_bounds(&self, room: RoomId) -> Result<(Seq, Seq)> {
        let row = sqlx::query(
            "SELECT last_seq, \
             COALESCE((SELECT MIN(seq) FROM events WHERE room_id = $1), last_seq + 1) \
             FROM rooms WHERE id = $1",
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
        let done = sqlx::query("DELETE FROM events WHERE created_at < $1")
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
        let before_seq: i64 = match before {
            None => i64::MAX,
            Some(id) => sqlx::query(&format!(
                "SELECT seq FROM events WHERE room_id = $1 AND message_id = $2 AND action = {ACTION_NEW}"
            ))
            .bind(Uuid::from(room))
            .bind(Uuid::from(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StorageError::NotFound)?
            .try_get(0)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3"
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
impl Store for PgStore {
    async fn health(&self) -> Result<()> {
        // One round trip on a pooled connection; bounded by ACQUIRE_TIMEOUT
        // when the database is down.
        self.pool.execute("SELECT 1").await.map_err(db)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
