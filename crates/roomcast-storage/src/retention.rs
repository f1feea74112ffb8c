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

    use roomcast_domain::Seq;

    use super::*;
    use crate::{SqliteStore, conformance};

    /// The task prunes at once when started (then hourly): with nothing
    /// kept, the one stored event leaves the log and its message stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn started_retention_prunes_the_log_and_keeps_messages() {
        let store: Storage = Arc::new(SqliteStore::open("sqlite::memory:").await.expect("open"));
        let alice = conformance::user(&store, "alice").await;
        let room = conformance::room(&store, &alice, "general").await;
        conformance::post(&store, room, &alice, "hello").await;
        let _retention = Retention::start(store.clone(), Duration::ZERO);
        let pruned = async {
            while store.first_kept_seq(room).await.expect("first") != Seq::new(2) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), pruned)
            .await
            .expect("pruned by the first tick");
        let history = store.history(room, None, 10).await.expect("history");
        assert_eq!(history.len(), 1, "messages stay");
    }
}
