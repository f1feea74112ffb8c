//! Where Roomcast keeps users, rooms and the per-room event log.
//!
//! The repository traits ([`UserRepository`], [`RoomRepository`],
//! [`MessageRepository`], bundled as [`Store`]) are the swap point: the
//! server holds an `Arc<dyn Store>` and never names a backend. The embedded
//! SQLite backend is the default; PostgreSQL ([`PgStore`]) is the
//! production backend for several server processes. Both are one
//! repository ([`sql::SqlStore`]) over their own [`sql::Backend`]: the
//! queries are written once. Every backend passes the same [`conformance`]
//! suite.
//!
//! Invariants:
//! - A room's `seq` is assigned in the transaction that stores the event, so
//!   seq 1..N is gap-free and duplicate-free per room.
//! - A write is acknowledged only after its transaction has committed
//!   durably; concurrent writes share one commit (group commit).
//! - Database errors never leave this crate as text for clients: they become
//!   a [`StorageError`] variant.

mod access;
#[cfg(feature = "test-support")]
pub mod conformance;
mod credentials;
mod error;
pub mod metrics;
mod model;
pub mod postgres;
mod read_state;
mod repository;
mod retention;
mod rows;
mod service_keys;
pub mod sql;
pub mod sqlite;
mod write;

use std::sync::Arc;

pub use access::AccessRepository;
pub use credentials::{
    Credentials, NewRefreshToken, RefreshOwner, RefreshRefusal, RotatedRefreshToken,
};
pub use error::StorageError;
pub use model::{
    Admission, CommitPolicy, NewMessage, NewRoom, NewUser, Posted, RoomSeed, SeededRoom,
};
pub use postgres::PgStore;
pub use read_state::{ReadMark, ReadState, RoomListing};
pub use repository::{
    CredentialRepository, MessageRepository, ReadRepository, RoomRepository, Store, UserRepository,
};
pub use retention::Retention;
pub use service_keys::{NewServiceKey, ServiceKey, ServiceKeyRepository};
pub use sqlite::SqliteStore;
pub use write::{PendingWrite, WriteOp, WriteOutcome};

/// The handle the rest of the server holds.
pub type Storage = Arc<dyn Store>;

/// Opens the backend a database URL names, creating and migrating it.
///
/// `sqlite:` URLs open the embedded backend, `postgres:`/`postgresql:` URLs
/// the PostgreSQL one (the database must exist; its schema is migrated).
pub async fn connect(url: &str) -> Result<Storage, StorageError> {
    connect_with(url, CommitPolicy::default()).await
}

/// [`connect`] with another commit policy (benchmarks, tuning).
pub async fn connect_with(url: &str, policy: CommitPolicy) -> Result<Storage, StorageError> {
    connect_with_replica(url, None, policy).await
}

/// [`connect_with`], sending history pages and participant lists to the
/// read replica at `replica_url` when there is one (PostgreSQL only; see
/// [`sql::SqlStore`]).
pub async fn connect_with_replica(
    url: &str,
    replica_url: Option<&str>,
    policy: CommitPolicy,
) -> Result<Storage, StorageError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(
            SqliteStore::open_with_replica(url, replica_url, policy).await?,
        ));
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return Ok(Arc::new(
            PgStore::open_with_replica(url, replica_url, policy).await?,
        ));
    }
    Err(StorageError::Unsupported(format!(
        "unknown database URL scheme in {:?}; expected sqlite: or postgres:",
        url.split(':').next().unwrap_or_default()
    )))
}
