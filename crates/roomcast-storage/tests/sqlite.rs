//! The repository conformance suite on the embedded SQLite backend.

use std::sync::Arc;

use roomcast_storage::{SqliteStore, Storage};

async fn fresh() -> (Storage, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_file(&dir.path().join("roomcast.db"))
        .await
        .expect("open sqlite");
    (Arc::new(store), dir)
}

roomcast_storage::conformance_tests!(fresh());

/// Four stores on one file: four server processes on one machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_handles_share_one_sequence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("roomcast.db");
    let mut handles: Vec<Storage> = Vec::new();
    for _ in 0..4 {
        handles.push(Arc::new(SqliteStore::open_file(&path).await.expect("open")));
    }
    roomcast_storage::conformance::several_handles_share_one_sequence(handles).await;
}
