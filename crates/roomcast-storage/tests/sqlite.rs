//! The repository conformance suite on the embedded SQLite backend.

use roomcast_storage::{SqliteStore, Storage};

async fn fresh() -> (Storage, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_file(&dir.path().join("roomcast.db"))
        .await
        .expect("open sqlite");
    (std::sync::Arc::new(store), dir)
}

roomcast_storage::conformance_tests!(fresh());
