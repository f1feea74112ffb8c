//! The repository, written once for both SQL backends.
//!
//! [`SqlStore`] implements every repository trait with sqlx over a pool.
//! What differs between SQLite and PostgreSQL is its [`Backend`]
//! parameter: how the database is opened, how a unique violation names
//! the rule it broke, how emails are compared, and the group-commit writer
//! that takes message writes. The two writers stay apart on purpose: their
//! difference is measured and documented in `sqlite/writer.rs` and
//! `postgres/writer.rs`.
//!
//! The SQL is one text for both: sqlx binds `$1`, `$2`, ... by number on
//! SQLite as on PostgreSQL, and the two schemas keep the same tables,
//! columns and integer encodings (`migrations/`).
//!
//! Adding a query: write it once, in the module of its repository, with
//! `$n` placeholders, reading its row through [`StoredRow`]. Each `impl`
//! here states the same driver bounds (Rust does not carry a trait's
//! `where` clauses to its users); a query that binds a type not listed
//! there adds it to each.

mod access;
mod credentials;
mod messages;
mod reads;
mod rooms;
mod service_keys;
mod users;

use std::fmt::Debug;

use async_trait::async_trait;
use roomcast_domain::{Room, Timestamp};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

pub use crate::rows::StoredRow;
use crate::rows::{self, ROOM_COLUMNS};
use crate::write::{PendingWrite, WriteOp, WriteOutcome};
use crate::{CommitPolicy, StorageError, Store};

type Result<T> = std::result::Result<T, StorageError>;

/// What one SQL backend brings to [`SqlStore`]: its sqlx driver, its
/// spellings of the few rules the two SQL dialects write differently, and
/// its message writer. A value of it is the backend's running part (the
/// writer and any background task), which the store holds and drops.
pub trait Backend: Debug + Send + Sync + Sized + 'static {
    /// The sqlx driver; its rows are read through [`StoredRow`].
    type Db: Database<Row: StoredRow, QueryResult: Done>;
    /// The name for logs and [`Store::backend`] (`sqlite`, `postgres`).
    const NAME: &'static str;
    /// A condition true when `users.email` equals `$1` case-insensitively,
    /// compared as the schema's unique rule on emails compares them, so
    /// the lookup uses that rule's index.
    const EMAIL_IS_PARAM_1: &'static str;
    /// A statement that holds off message writes to the room `$1` until
    /// the transaction ends, so that moving a read position and counting
    /// the messages it passes agree with the writer's commits (a share
    /// lock on the room row, which the writer updates in every batch).
    /// SQLite needs none: a write statement holds its database's one
    /// write lock from its start.
    const HOLD_ROOM_WRITES: &'static str;
    /// A query naming (column `name`) the tables that hold the event log:
    /// `events` itself, or each of its partitions.
    const EVENT_LOG_TABLES: &'static str;
    /// A statement that deletes at most `$2` events created before `$1`
    /// from the log table `{table}`, finding them in one scan and deleting
    /// them by the backend's cheapest handle on a row.
    const PRUNE_BATCH: &'static str;
    /// Opens the database a URL names (creating what the backend may
    /// create), migrates it, and starts the writer.
    fn open(
        url: &str,
        policy: CommitPolicy,
    ) -> impl Future<Output = Result<(Pool<Self::Db>, Self)>> + Send;
    /// Opens a pool on a read replica of the database (never migrated nor
    /// written), or `Unsupported` where the backend has no replicas.
    fn open_replica(url: &str) -> impl Future<Output = Result<Pool<Self::Db>>> + Send;
    /// Which uniqueness rule a unique violation broke: `username`,
    /// `email`, `room`, or `unique` for any other.
    fn unique_rule(error: &dyn DatabaseError) -> &'static str;
    /// Queues a message write with the writer (see
    /// [`crate::MessageRepository::queue_write`]).
    fn queue(&self, op: WriteOp) -> impl Future<Output = Result<PendingWrite>> + Send;
    /// Whether the writer still takes writes: reads may work while writes
    /// cannot, and health must say so.
    fn writer_alive(&self) -> Result<()>;
}

/// What a statement did, for each driver's result type (sqlx names the
/// method alike on each, but in no trait).
pub trait Done {
    /// How many rows the statement inserted, changed or deleted.
    fn rows_affected(&self) -> u64;
}

impl Done for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Done for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A SQL backend's store: reads and rare writes (accounts, rooms,
/// participants, tokens) through a small pool, message writes through the
/// backend's writer, and, given a read replica, the reads that may lag
/// (see [`SqlStore::lagging`]) through a pool on the replica.
#[derive(Debug)]
pub struct SqlStore<B: Backend> {
    pool: Pool<B::Db>,
    replica: Option<Pool<B::Db>>,
    backend: B,
}

impl<B: Backend> SqlStore<B> {
    /// Opens (creating where the backend can) and migrates the database
    /// at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, CommitPolicy::default()).await
    }

    /// [`open`](Self::open) with another commit policy (benchmarks).
    pub async fn open_with(url: &str, policy: CommitPolicy) -> Result<Self> {
        Self::open_with_replica(url, None, policy).await
    }

    /// [`open_with`](Self::open_with), sending the reads that may lag to
    /// the read replica at `replica_url` when there is one.
    pub async fn open_with_replica(
        url: &str,
        replica_url: Option<&str>,
        policy: CommitPolicy,
    ) -> Result<Self> {
        // The primary first: it migrates the schema the replica replays.
        let (pool, backend) = B::open(url, policy).await?;
        let replica = match replica_url {
            Some(url) => Some(B::open_replica(url).await?),
            None => None,
        };
        Ok(Self {
            pool,
            replica,
            backend,
        })
    }

    /// Runs `read` on the replica when there is one, else on the primary.
    ///
    /// Only for reads that may see the database as it was a moment ago:
    /// history pages and participant lists, never what resume, admission
    /// or the writer read (they must see the latest commit, and read the
    /// primary's pool directly). A replica that fails (`Unavailable`) or
    /// does not have a row yet (`NotFound`: a message id learnt from a
    /// live event may not have been replayed there) is answered from the
    /// primary: the replica offloads reads, it never fails them.
    async fn lagging<'a, T, F, Fut>(&'a self, read: F) -> Result<T>
    where
        F: Fn(&'a Pool<B::Db>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(replica) = &self.replica else {
            return read(&self.pool).await;
        };
        match read(replica).await {
            Err(StorageError::NotFound) => read(&self.pool).await,
            Err(StorageError::Unavailable(e)) => {
                tracing::warn!(error = %e, "read replica failed; reading the primary");
                read(&self.pool).await
            }
            done => done,
        }
    }

    /// Queues a message write and waits for its commit.
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.backend.queue(op).await?.await
    }
}

impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    /// The rooms `clause` selects from `rooms r JOIN users h` (the host),
    /// with `$1` bound to `bind`.
    async fn rooms_where(&self, clause: &str, bind: Uuid) -> Result<Vec<Room>> {
        let sql =
            format!("SELECT {ROOM_COLUMNS} FROM rooms r JOIN users h ON h.id = r.host_id {clause}");
        let rows = sqlx::query(&sql)
            .bind(bind)
            .fetch_all(&self.pool)
            .await
            .map_err(db::<B>)?;
        rows.iter().map(rows::room).collect()
    }

    /// The room with id `id`, which must exist.
    async fn room_by_id(&self, id: Uuid) -> Result<Room> {
        self.rooms_where("WHERE r.id = $1", id)
            .await?
            .pop()
            .ok_or(StorageError::NotFound)
    }
}

/// Maps a database error to a storage error, by the error's kind (never
/// its text): a unique violation is a conflict named after its rule, a
/// missing referenced row is `NotFound`, anything else means the database
/// failed us.
fn db<B: Backend>(e: sqlx::Error) -> StorageError {
    if let Some(d) = e.as_database_error() {
        match d.kind() {
            ErrorKind::UniqueViolation => return StorageError::Conflict(B::unique_rule(d)),
            ErrorKind::ForeignKeyViolation => return StorageError::NotFound,
            _ => {}
        }
    }
    StorageError::unavailable(e)
}

/// Now, as the schemas store times: microseconds since the Unix epoch.
fn now_micros() -> i64 {
    Timestamp::now().unix_micros()
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn health(&self) -> Result<()> {
        // Reads may work while writes cannot: the writer is gone.
        self.backend.writer_alive()?;
        // One round trip on a pooled connection; bounded by the pool's
        // acquire timeout when the database is down.
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        B::NAME
    }
}
