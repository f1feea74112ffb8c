//! Where Roomcast keeps users, rooms and the per-room event log.
//!
//! The repository traits ([`UserRepository`], [`RoomRepository`],
//! [`MessageRepository`], bundled as [`Store`]) are the swap point: the
//! server holds an `Arc<dyn Store>` and never names a backend. The embedded
//! SQLite backend is the default; every backend passes the same
//! [`conformance`] suite.
//!
//! Invariants:
//! - A room's `seq` is assigned in the transaction that stores the event, so
//!   seq 1..N is gap-free and duplicate-free per room.
//! - A write is acknowledged only after its transaction has committed
//!   durably; concurrent writes share one commit (group commit).
//! - Database errors never leave this crate as text for clients: they become
//!   a [`StorageError`] variant.

pub mod conformance;
mod credentials;
mod error;
mod model;
mod repository;
pub mod sqlite;

use std::sync::Arc;

pub use credentials::{Credentials, NewRefreshToken, RefreshRefusal};
pub use error::StorageError;
pub use model::{NewMessage, NewRoom, NewUser, Posted, RoomSeed, SeededRoom};
pub use repository::{
    CredentialRepository, MessageRepository, RoomRepository, Store, UserRepository,
};
pub use sqlite::SqliteStore;

/// The handle the rest of the server holds.
pub type Storage = Arc<dyn Store>;

/// Opens the backend a database URL names, creating and migrating it.
///
/// `sqlite:` URLs (and bare paths) open the embedded backend.
pub async fn connect(url: &str) -> Result<Storage, StorageError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return Err(StorageError::Unsupported(
            "PostgreSQL support is not built yet; use a sqlite: URL".to_owned(),
        ));
    }
    Err(StorageError::Unsupported(format!(
        "unknown database URL scheme in {:?}; expected sqlite:",
        url.split(':').next().unwrap_or_default()
    )))
}
