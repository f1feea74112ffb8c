//! The production backend: PostgreSQL through sqlx, for several server
//! processes sharing one database.
//!
//! Reads and rare writes (accounts, rooms, participants) go through a small
//! pool that fails fast: acquiring a connection waits at most
//! [`ACQUIRE_TIMEOUT`], never sqlx's 30 s default, so a request during an
//! outage gets `Unavailable` promptly. Message writes go through the
//! group-commit writer (`writer.rs`), whose connections reconnect by themselves. The
//! queries are the shared ones of [`crate::sql`]; this module says how
//! PostgreSQL is opened and spelled.

#[cfg(feature = "test-support")]
mod private;
#[cfg(feature = "test-support")]
mod scratch;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

#[cfg(feature = "test-support")]
pub use self::private::PrivatePostgres;
#[cfg(feature = "test-support")]
pub use self::scratch::TestDatabase;
use self::writer::Writers;
use crate::sql::{Backend, SqlStore};
use crate::write::{PendingWrite, WriteOp};
use crate::{CommitPolicy, StorageError};

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
pub type PgStore = SqlStore<Postgres>;

/// PostgreSQL's part of a [`PgStore`]: the writer tasks.
#[derive(Debug)]
pub struct Postgres {
    writers: Writers,
}

impl Backend for Postgres {
    type Db = sqlx::Postgres;
    const NAME: &'static str = "postgres";
    /// Emails are unique by `lower(email)` (`users_email_key`).
    const EMAIL_IS_PARAM_1: &'static str = "lower(email) = lower($1)";
    const HOLD_ROOM_WRITES: &'static str = "SELECT 1 FROM rooms WHERE id = $1 FOR SHARE";
    /// The partitions of migration 0008, by name.
    const EVENT_LOG_TABLES: &'static str = "SELECT c.relname::text AS name \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'events'::regclass ORDER BY c.relname";
    /// By physical address (a TID scan), within one partition, where a
    /// row's `ctid` is unique. Each batch scans its partition from the
    /// start, past the rows earlier batches left dead until vacuum: cheap
    /// for an hour's events, slower (but still in short transactions)
    /// the first time a long-kept log is pruned.
    const PRUNE_BATCH: &'static str = "DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
         SELECT ctid FROM {table} WHERE created_at < $1 LIMIT $2))";

    /// Connects to and migrates the database at a `postgres://` URL; the
    /// database must exist.
    async fn open(url: &str, policy: CommitPolicy) -> Result<(PgPool, Self)> {
        let options = connect_options(url)?;
        let pool = pool(&options).await?;
        // Concurrent starts are safe: sqlx holds an advisory lock while
        // migrating PostgreSQL.
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .map_err(StorageError::unavailable)?;
        let writers = Writers::start(&options, policy).await?;
        Ok((pool, Self { writers }))
    }

    /// A streaming replica (`hot_standby`) of the primary: the same
    /// schema, read-only, migrated by the primary's replication.
    async fn open_replica(url: &str) -> Result<PgPool> {
        pool(&connect_options(url)?).await
    }

    /// By constraint name, as `migrations/postgres` declares them.
    fn unique_rule(error: &dyn DatabaseError) -> &'static str {
        match error.constraint() {
            Some("users_username_key") => "username",
            Some("users_email_key") => "email",
            Some("rooms_host_slug_key") => "room",
            _ => "unique",
        }
    }

    async fn queue(&self, op: WriteOp) -> Result<PendingWrite> {
        self.writers.queue(op).await
    }

    fn writer_alive(&self) -> Result<()> {
        self.writers.alive()
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(|e| StorageError::Unsupported(format!("bad PostgreSQL URL: {e}")))?
        .application_name("roomcast"))
}

/// The pool for reads and rare writes (or, on a replica, reads).
async fn pool(options: &PgConnectOptions) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(IDLE_TIMEOUT)
        // A pooled connection is pinged before use, so connections
        // broken by a database restart are replaced, not handed out.
        .test_before_acquire(true)
        .connect_with(options.clone())
        .await
        .map_err(StorageError::unavailable)
}
