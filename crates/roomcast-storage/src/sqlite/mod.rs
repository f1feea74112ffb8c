//! The embedded default backend: one SQLite file in WAL mode, so the server
//! runs with no database service at all.
//!
//! Reads go through a small pool (WAL lets them run beside the writer);
//! message writes go through the group-commit writer (`writer.rs`); rare writes
//! (accounts, rooms, participants) use the pool, and SQLite's busy timeout
//! orders them with the writer. The queries are the shared ones of
//! [`crate::sql`]; this module says how SQLite is opened and spelled.

mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::error::DatabaseError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use self::writer::{DatabaseFile, Writer};
use crate::sql::{Backend, SqlStore};
use crate::write::{PendingWrite, WriteOp};
use crate::{CommitPolicy, StorageError};

type Result<T> = std::result::Result<T, StorageError>;

/// How long a call waits for a pooled connection or a lock before it fails
/// with `Unavailable`: fail fast, never the 30 s default.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections for reads and rare writes.
const POOL_SIZE: u32 = 4;
/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The SQLite backend.
pub type SqliteStore = SqlStore<Sqlite>;

/// SQLite's part of a [`SqliteStore`]: the writer thread and the WAL
/// checkpoint task.
#[derive(Debug)]
pub struct Sqlite {
    writer: Writer,
    /// Checkpoints the WAL off the commit path; ends with the store.
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

impl SqliteStore {
    /// Opens the database file `path`.
    pub async fn open_file(path: &std::path::Path) -> Result<Self> {
        Self::open(&format!("sqlite://{}", path.display())).await
    }
}

impl Backend for Sqlite {
    type Db = sqlx::Sqlite;
    const NAME: &'static str = "sqlite";
    /// The column is declared `COLLATE NOCASE` and unique under it.
    const EMAIL_IS_PARAM_1: &'static str = "email = $1 COLLATE NOCASE";
    // Nothing to hold (the UPDATE that follows takes the write lock before
    // it reads), and nothing read: a read here would pin a snapshot that
    // the UPDATE could not then upgrade once the writer had committed.
    const HOLD_ROOM_WRITES: &'static str = "SELECT $1";
    /// One table: a single file has one writer whatever its tables, so
    /// partitions would split no work (see ARCHITECTURE.md).
    const EVENT_LOG_TABLES: &'static str = "SELECT 'events' AS name";
    /// By primary key: the log is a WITHOUT ROWID table.
    const PRUNE_BATCH: &'static str = "DELETE FROM {table} WHERE (room_id, seq) IN \
         (SELECT room_id, seq FROM {table} WHERE created_at < $1 LIMIT $2)";

    /// One process owns an SQLite file: there is no replica to read.
    async fn open_replica(_url: &str) -> Result<SqlitePool> {
        Err(StorageError::Unsupported(
            "a read replica needs PostgreSQL; SQLite has none".into(),
        ))
    }

    async fn open(url: &str, policy: CommitPolicy) -> Result<(SqlitePool, Self)> {
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
            .max_connections(POOL_SIZE)
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
        Ok((
            pool,
            Self {
                writer,
                checkpointer,
            },
        ))
    }

    /// SQLite names no constraint, only the columns of the broken rule
    /// (`UNIQUE constraint failed: users.email`).
    fn unique_rule(error: &dyn DatabaseError) -> &'static str {
        let msg = error.message();
        if msg.contains("users.email") {
            "email"
        } else if msg.contains("users.username") {
            "username"
        } else if msg.contains("rooms.") {
            "room"
        } else {
            "unique"
        }
    }

    async fn queue(&self, op: WriteOp) -> Result<PendingWrite> {
        self.writer.queue(op).await
    }

    fn writer_alive(&self) -> Result<()> {
        self.writer.alive()
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
