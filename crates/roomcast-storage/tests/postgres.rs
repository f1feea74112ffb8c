//! The repository conformance suite on PostgreSQL: the machine's server at
//! 127.0.0.1:5432 (user postgres, trust auth), or the server
//! `ROOMCAST_TEST_PG_URL` names. Every test gets a database of its own,
//! dropped afterwards, so no test depends on another's rows.

use std::sync::Arc;

use roomcast_storage::postgres::TestDatabase;
use roomcast_storage::{PgStore, Storage};

fn admin_url() -> String {
    std::env::var("ROOMCAST_TEST_PG_URL").unwrap_or_else(|_| TestDatabase::DEFAULT_ADMIN_URL.into())
}

async fn fresh_pg() -> (Storage, TestDatabase) {
    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database (is PostgreSQL up on 127.0.0.1:5432?)");
    let store = PgStore::open(db.url()).await.expect("open postgres");
    (Arc::new(store), db)
}

roomcast_storage::conformance_tests!(fresh_pg());

/// Four stores on one database: four server processes' connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_handles_share_one_sequence() {
    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database");
    let mut handles: Vec<Storage> = Vec::new();
    for _ in 0..4 {
        handles.push(Arc::new(PgStore::open(db.url()).await.expect("open")));
    }
    roomcast_storage::conformance::several_handles_share_one_sequence(handles).await;
}

/// `connect` dispatches on the scheme, for both spellings PostgreSQL uses.
#[tokio::test]
async fn connect_opens_postgres_urls() {
    let db = TestDatabase::create(&admin_url())
        .await
        .expect("create a test database");
    let store = roomcast_storage::connect(db.url()).await.expect("connect");
    assert_eq!(store.backend(), "postgres");
    store.health().await.expect("healthy");
    let other = db.url().replacen("postgres://", "postgresql://", 1);
    let again = roomcast_storage::connect(&other).await.expect("connect");
    assert_eq!(again.backend(), "postgres");
}
