//! Event-log retention: a background task that drops old events from every
//! room's log, hourly, through [`crate::MessageRepository::prune_events`].
//! Like SQLite's WAL checkpointer, it is storage's own upkeep: the binary
//! only says how long events are kept.

use std::time::Duration;

use roomcast_domain::Timestamp;
use tokio::task::JoinHandle;

use crate::Storage;

/// How often the log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The running pruning task; dropping it stops the task.
#[derive(Debug)]
pub struct Retention {
    task: JoinHandle<()>,
}

impl Retention {
    /// Starts pruning events older than `keep` from `storage`, now and then
    /// every hour. Messages stay; a client behind the oldest kept event
    /// reloads (see [`crate::MessageRepository::first_kept_seq`]).
    pub fn start(storage: Storage, keep: Duration) -> Self {
        Self {
            task: tokio::spawn(prune_forever(storage, keep)),
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn prune_forever(storage: Storage, keep: Duration) {
    let keep_micros = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let cutoff =
            Timestamp::from_unix_micros(Timestamp::now().unix_micros().saturating_sub(keep_micros));
        let Some(cutoff) = cutoff else { continue };
        match storage.prune_events(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                events = n,
                keep_secs = keep.as_secs(),
                "pruned the event log"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning the event log failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roomcast_domain::{MessageBody, RoomSlug, Seq, Username, Visibility};

    use super::*;
    use crate::{NewMessage, NewRoom, NewUser, SqliteStore};

    /// The task prunes at once when started (then hourly): with nothing
    /// kept, the one stored event leaves the log and its message stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn started_retention_prunes_the_log_and_keeps_messages() {
        let store: Storage = Arc::new(SqliteStore::open("sqlite::memory:").await.expect("open"));
        let alice = store
            .create_user(NewUser {
                username: Username::parse("alice").expect("name"),
                name: "Alice".into(),
                email: None,
                password_hash: None,
            })
            .await
            .expect("user");
        let room = store
            .create_room(NewRoom {
                host: alice.id,
                slug: RoomSlug::parse("general").expect("slug"),
                name: "General".into(),
                description: String::new(),
                visibility: Visibility::Public,
            })
            .await
            .expect("room");
        store
            .post_message(NewMessage {
                room_id: room.id,
                author: alice,
                body: MessageBody::parse("hello").expect("body"),
                client_id: None,
            })
            .await
            .expect("post");
        let _retention = Retention::start(store.clone(), Duration::ZERO);
        let pruned = async {
            while store.first_kept_seq(room.id).await.expect("first") != Seq::new(2) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), pruned)
            .await
            .expect("pruned by the first tick");
        let history = store.history(room.id, None, 10).await.expect("history");
        assert_eq!(history.len(), 1, "messages stay");
    }
}
