//! Group commit for SQLite: one thread owns the only writing connection and
//! commits whatever writes queued up while the previous commit was syncing.
//!
//! Why: one fsync per message caps a writer near 300 messages/s on this
//! class of disk. Here a commit carries every write that arrived during the
//! previous one, so throughput grows with load while each write is still
//! acknowledged only after its own commit. At low load a batch is one write
//! and adds no delay: nothing waits for a timer. SQLite allows one writer at
//! a time anyway (`BEGIN IMMEDIATE` takes the file's write lock, so writers
//! of other processes queue behind it), which makes the room's `seq`
//! gap-free.
//!
//! Why a plain thread with its own rusqlite connection rather than a sqlx
//! connection: sqlx runs each SQLite connection on a worker thread of its
//! own, so every statement is a round trip between threads. Measured on a
//! one-message batch at 100 commits/s, `BEGIN` alone took 125 µs and the
//! whole batch 650 µs, of which the fsync was 225 µs. This writer only ever
//! waits for its queue or for the disk, so it is that thread itself: a
//! statement is a function call, and a write crosses threads twice (queued
//! in, answered out). The bundled SQLite library is the one sqlx links, so
//! both kinds of connection share its locks on the file.
//!
//! A batch reads what the checks need, decides every write in Rust
//! (`write::plan`, shared with PostgreSQL), then writes the rows with
//! cached prepared statements and commits.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::LazyLock;

use roomcast_domain::{ClientId, RoomId, UserId};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, TransactionBehavior, named_params, params,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::rows::{self, EVENT_COLUMNS};
use crate::write::{
    self, ACTION_NEW, DeletedRow, EditRow, EventRow, Known, Live, MessageRow, Outcomes,
    PendingWrite, RoomSeq, Rows, WriteOp, WriteOutcome,
};
use crate::{CommitPolicy, StorageError, metrics};

/// Writes waiting for the writer; senders wait (backpressure) beyond this.
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<WriteOutcome, StorageError>>;

/// The handle to the writer thread. Dropping it lets the thread finish the
/// writes already queued and end.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<(WriteOp, Reply)>,
}

impl Writer {
    /// Opens the writer's connection to the (already migrated) database
    /// file and starts its thread; at most `policy.max_batch` writes share
    /// one commit (`policy.writers` does not apply: SQLite has one writer).
    pub(crate) async fn start(
        file: DatabaseFile,
        busy_timeout: std::time::Duration,
        policy: CommitPolicy,
    ) -> Result<Self, StorageError> {
        let conn = tokio::task::spawn_blocking(move || open(file, busy_timeout))
            .await
            .map_err(StorageError::unavailable)?
            .map_err(StorageError::unavailable)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let max_batch = policy.max_batch.max(1);
        std::thread::Builder::new()
            .name("roomcast-sqlite-writer".into())
            .spawn(move || run(conn, rx, max_batch))
            .map_err(StorageError::unavailable)?;
        Ok(Self { tx })
    }

    /// Queues a write; the queue is the commit order.
    pub(crate) async fn queue(&self, op: WriteOp) -> Result<PendingWrite, StorageError> {
        let (reply, answer) = oneshot::channel();
        metrics::enqueue(&self.tx, (op, reply))
            .await
            .map_err(|_| writer_gone())?;
        Ok(PendingWrite::new(async move {
            answer.await.map_err(|_| writer_gone())?
        }))
    }

    /// Whether the writer thread still takes writes (it ends only if it
    /// panicked, or after the store is dropped).
    pub(crate) fn alive(&self) -> Result<(), StorageError> {
        if self.tx.is_closed() {
            Err(writer_gone())
        } else {
            Ok(())
        }
    }
}

fn writer_gone() -> StorageError {
    StorageError::unavailable(io::Error::other("sqlite writer stopped"))
}

/// The database the pool has opened (and migrated), as the writer must
/// open it too.
#[derive(Debug)]
pub(crate) struct DatabaseFile {
    /// The file, or for an in-memory database the name sqlx gave it.
    pub(crate) path: PathBuf,
    /// `sqlite::memory:` (or `mode=memory`): sqlx shares it between its
    /// connections through SQLite's shared cache under that name, and so
    /// does the writer.
    pub(crate) in_memory: bool,
}

/// The writer's connection. Its settings are per connection, so they are
/// set here, not inherited from the pool's options.
fn open(file: DatabaseFile, busy_timeout: std::time::Duration) -> rusqlite::Result<Connection> {
    // The same open flags as sqlx's, so both reach the same database.
    let mut flags = OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if file.in_memory {
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let conn = Connection::open_with_flags(file.path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(32);
    // FULL: a commit is on disk before it is acknowledged. No automatic
    // checkpoint: it would run inside the commit that crosses the
    // threshold, stalling every write of that batch for a database-file
    // fsync; the store's background task checkpoints in PASSIVE mode.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
    )?;
    Ok(conn)
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<(WriteOp, Reply)>, max_batch: usize) {
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::batch_taken(batch.len());
        commit_batch(&mut conn, &mut batch);
    }
}

/// Applies a batch in one transaction and answers every write in it: each
/// its own outcome after the commit, or `Unavailable` for all if the
/// transaction failed (then nothing of the batch is stored).
fn commit_batch(conn: &mut Connection, batch: &mut Vec<(WriteOp, Reply)>) {
    let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
    match apply(conn, &ops) {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            // The transaction rolled back when it was dropped.
            tracing::error!(error = %e, writes = batch.len(), "sqlite batch failed; rolled back");
            let msg = e.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StorageError::unavailable(io::Error::other(
                    msg.clone(),
                ))));
            }
        }
    }
}

/// The outer error aborts the whole batch; inner ones are per write (not
/// found, not the author), decided before anything is written, so they
/// leave the rest of the batch alone.
fn apply(conn: &mut Connection, ops: &[&WriteOp]) -> rusqlite::Result<Outcomes> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known = read_known(&tx, ops)?;
    let (rows, outcomes) = write::plan(ops, known);
    write_rows(&tx, &rows)?;
    tx.commit()?;
    Ok(outcomes)
}

/// The `new` event already stored under a (room, author, clientId) key.
static SEEN_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e JOIN users u ON u.id = e.user_id \
         WHERE e.room_id = ?1 AND e.user_id = ?2 AND e.client_id = ?3 AND e.action = {ACTION_NEW}"
    )
});

/// Reads what the batch's checks need, under the write lock.
fn read_known(tx: &Connection, ops: &[&WriteOp]) -> rusqlite::Result<Known> {
    let mut known = Known::default();
    let mut stmt = tx.prepare_cached("SELECT last_seq FROM rooms WHERE id = ?1")?;
    for room in write::rooms_of(ops) {
        let seq = stmt
            .query_row([Uuid::from(room)], |row| row.get::<_, i64>(0))
            .optional()?;
        if let Some(seq) = seq {
            known.last_seq.insert(room, seq);
        }
    }

    let keys = write::client_keys(ops);
    if !keys.is_empty() {
        let mut stmt = tx.prepare_cached(&SEEN_SQL)?;
        for key in keys {
            let mut found = stmt.query(params![
                Uuid::from(key.room),
                Uuid::from(key.author),
                key.client_id.as_str()
            ])?;
            if let Some(row) = found.next()? {
                let event = rows::event(row).map_err(|e| e.to_string());
                known.seen.insert(key, event);
            }
        }
    }

    let targets = write::targets_of(ops);
    if !targets.is_empty() {
        let mut stmt = tx.prepare_cached("SELECT room_id, user_id FROM messages WHERE id = ?1")?;
        for id in targets {
            let live = stmt
                .query_row([Uuid::from(id)], |row| {
                    Ok(Live {
                        room: RoomId::from_uuid(row.get(0)?),
                        author: UserId::from_uuid(row.get(1)?),
                    })
                })
                .optional()?;
            if let Some(live) = live {
                known.live.insert(id, live);
            }
        }
    }
    Ok(known)
}

/// Writes a planned batch, each row bound by column name from a pattern
/// that names every field of the row. Order matters: deleted bodies are
/// blanked after this batch's events are in.
fn write_rows(tx: &Connection, rows: &Rows) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached("UPDATE rooms SET last_seq = :last_seq WHERE id = :id")?;
    for &RoomSeq { room, last_seq } in &rows.seqs {
        stmt.execute(named_params! { ":id": Uuid::from(room), ":last_seq": last_seq })?;
    }

    let mut stmt = tx.prepare_cached(
        "INSERT INTO messages \
         (id, room_id, user_id, seq, body, created_at, updated_at, edited, client_id) \
         VALUES (:id, :room_id, :user_id, :seq, :body, :created_at, :created_at, 0, :client_id)",
    )?;
    for MessageRow {
        id,
        room,
        user,
        seq,
        body,
        created,
        client_id,
    } in &rows.messages
    {
        stmt.execute(named_params! {
            ":id": Uuid::from(*id),
            ":room_id": Uuid::from(*room),
            ":user_id": Uuid::from(*user),
            ":seq": seq,
            ":body": body,
            ":created_at": created.unix_micros(),
            ":client_id": client_id.as_ref().map(ClientId::as_str),
        })?;
    }

    count_posts(tx, &rows.messages)?;

    let mut stmt = tx.prepare_cached(
        "UPDATE messages SET body = :body, edited = 1, updated_at = :updated_at WHERE id = :id",
    )?;
    for EditRow { id, body, updated } in &rows.edits {
        stmt.execute(named_params! {
            ":id": Uuid::from(*id),
            ":body": body,
            ":updated_at": updated.unix_micros(),
        })?;
    }

    let mut stmt = tx.prepare_cached(
        "INSERT INTO events \
         (room_id, seq, action, message_id, user_id, body, edited, created_at, updated_at, client_id) \
         VALUES (:room_id, :seq, :action, :message_id, :user_id, :body, :edited, :created_at, \
                 :updated_at, :client_id)",
    )?;
    for EventRow {
        room,
        seq,
        action,
        message,
        user,
        body,
        edited,
        created,
        updated,
        client_id,
    } in &rows.events
    {
        stmt.execute(named_params! {
            ":room_id": Uuid::from(*room),
            ":seq": seq,
            ":action": action,
            ":message_id": Uuid::from(*message),
            ":user_id": Uuid::from(*user),
            ":body": body,
            ":edited": edited,
            ":created_at": created.unix_micros(),
            ":updated_at": updated.unix_micros(),
            ":client_id": client_id.as_ref().map(ClientId::as_str),
        })?;
    }

    if !rows.deleted.is_empty() {
        let mut delete = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
        let mut blank = tx.prepare_cached(
            "UPDATE events SET body = '' WHERE room_id = ?1 AND message_id = ?2 AND body <> ''",
        )?;
        for &DeletedRow { room, id } in &rows.deleted {
            delete.execute([Uuid::from(id)])?;
            blank.execute([Uuid::from(room), Uuid::from(id)])?;
        }
    }
    Ok(())
}

/// Keeps the unread counts of the batch's posts: a post adds one to its
/// room's `live_messages` and to its author's `seen` (the rule is in
/// migrations/sqlite/0005; 0007 moved this half of it here from a row
/// trigger). Why here: the trigger ran two UPDATEs per message; this runs
/// one per room and one per (room, author) per batch, as PostgreSQL's
/// statement trigger does.
fn count_posts(tx: &Connection, posts: &[MessageRow]) -> rusqlite::Result<()> {
    if posts.is_empty() {
        return Ok(());
    }
    let mut per_room: HashMap<RoomId, i64> = HashMap::new();
    let mut per_author: HashMap<(RoomId, UserId), i64> = HashMap::new();
    for post in posts {
        *per_room.entry(post.room).or_default() += 1;
        *per_author.entry((post.room, post.user)).or_default() += 1;
    }
    let mut stmt =
        tx.prepare_cached("UPDATE rooms SET live_messages = live_messages + ?2 WHERE id = ?1")?;
    for (room, count) in per_room {
        stmt.execute(params![Uuid::from(room), count])?;
    }
    let mut stmt = tx.prepare_cached(
        "UPDATE participants SET seen = seen + ?3 WHERE room_id = ?1 AND user_id = ?2",
    )?;
    for ((room, author), count) in per_author {
        stmt.execute(params![Uuid::from(room), Uuid::from(author), count])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durability rests on these per-connection settings: a writer opened
    /// without them would acknowledge writes that are not on disk yet.
    #[test]
    fn the_writer_connection_syncs_every_commit_and_never_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        Connection::open(&path).expect("create");
        let file = DatabaseFile {
            path,
            in_memory: false,
        };
        let conn = open(file, std::time::Duration::from_secs(1)).expect("open");
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .expect(name)
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("wal_autocheckpoint"), "0");
    }

    /// Health reads this: a writer whose thread has ended (its queue's
    /// receiver gone) is reported down, not left to fail every write.
    #[test]
    fn a_writer_whose_thread_ended_is_not_alive() {
        let (tx, rx) = mpsc::channel(1);
        let writer = Writer { tx };
        assert!(writer.alive().is_ok());
        drop(rx);
        assert!(matches!(writer.alive(), Err(StorageError::Unavailable(_))));
    }
}
