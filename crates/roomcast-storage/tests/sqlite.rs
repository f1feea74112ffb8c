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

/// `sqlite::memory:`, for embedders' tests: the writer shares sqlx's
/// in-memory database (one per store), not a file of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_takes_writes_and_reads_them_back() {
    let memory = || async {
        let store: Storage = Arc::new(SqliteStore::open("sqlite::memory:").await.expect("open"));
        store
    };
    roomcast_storage::conformance::posts_get_consecutive_seqs_per_room(memory().await).await;
    // Each store is a database of its own: the same users again, no clash.
    roomcast_storage::conformance::queued_writes_commit_in_the_order_queued(memory().await).await;
    roomcast_storage::conformance::edits_and_deletes_are_for_the_author_in_the_same_room(
        memory().await,
    )
    .await;
}
