//! Group commit for SQLite: one task owns the only writing connection and
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
//! A batch costs a fixed number of statements whatever its size, like the
//! PostgreSQL writer: read what the checks need (rows passed in as one JSON
//! array through `json_each`), decide every write in Rust
//! (`write::plan`), then one statement per table. Each sqlx call is a hop
//! to the connection's worker thread, so statements per write, not SQL,
//! were what capped a batch.

use std::io;

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::rows::{self, EVENT_COLUMNS};
use crate::write::ACTION_NEW;
use crate::write::{self, Known, Live, Outcomes, PendingWrite, WriteOp, WriteOutcome};
use crate::{CommitPolicy, StorageError};

/// Writes waiting for the writer; senders wait (backpressure) beyond this.
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<WriteOutcome, StorageError>>;

/// The handle to the writer task. Dropping it lets the task finish the
/// writes already queued and end.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<(WriteOp, Reply)>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer task; at most `policy.max_batch` writes share one
    /// commit (`policy.writers` does not apply: SQLite has one writer).
    pub(crate) async fn start(
        options: &SqliteConnectOptions,
        policy: CommitPolicy,
    ) -> Result<Self, StorageError> {
        let conn = SqliteConnection::connect_with(options)
            .await
            .map_err(StorageError::unavailable)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(conn, rx, policy.max_batch.max(1)));
        Ok(Self { tx, task })
    }

    /// Queues a write; the queue is the commit order.
    pub(crate) async fn queue(&self, op: WriteOp) -> Result<PendingWrite, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((op, reply)).await.map_err(|_| writer_gone())?;
        Ok(PendingWrite::new(async move {
            answer.await.map_err(|_| writer_gone())?
        }))
    }

    /// Queues a write and waits for its commit.
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        self.queue(op).await?.await
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The task ends by itself once the queue is drained and closed; a
        // runtime shutting down may cancel it, which loses no acknowledged
        // write (acknowledgements follow commits).
        if self.task.is_finished() {
            tracing::debug!("sqlite writer already finished");
        }
    }
}

fn writer_gone() -> StorageError {
    StorageError::unavailable(io::Error::other("sqlite writer stopped"))
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<(WriteOp, Reply)>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        drain(&mut rx, &mut batch, max_batch);
        if batch.len() > 1 {
            // More than one write waiting means others are on their way:
            // let the tasks ready to run queue theirs before committing.
            // It costs microseconds and spares whole commits under load.
            tokio::task::yield_now().await;
            drain(&mut rx, &mut batch, max_batch);
        }
        commit_batch(&mut conn, &mut batch).await;
    }
    let _ = conn.close().await;
}

/// Adds what is already queued to `batch`, up to `max_batch`.
fn drain(
    rx: &mut mpsc::Receiver<(WriteOp, Reply)>,
    batch: &mut Vec<(WriteOp, Reply)>,
    max_batch: usize,
) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Applies a batch in one transaction and answers every write in it: each
/// its own outcome after the commit, or `Unavailable` for all if the
/// transaction failed (then nothing of the batch is stored).
async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<(WriteOp, Reply)>) {
    let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
    match apply(conn, &ops).await {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "sqlite batch failed; rolled back");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
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
async fn apply(conn: &mut SqliteConnection, ops: &[&WriteOp]) -> Result<Outcomes, sqlx::Error> {
    // Each statement is a round trip to sqlx's SQLite thread, and on a
    // small batch those hand-offs cost more than the SQL: so statements
    // that always run together go in one query (`$N` parameters are
    // shared by all its statements).
    let mut known = Known::default();
    let rooms: Vec<Value> = write::rooms_of(ops).iter().map(hex).collect();
    let found = sqlx::query(
        "BEGIN IMMEDIATE; \
         SELECT id, last_seq FROM rooms WHERE id IN (SELECT unhex(value) FROM json_each($1))",
    )
    .bind(Value::from(rooms).to_string())
    .fetch_all(&mut *conn)
    .await?;
    for row in &found {
        known.last_seq.insert(row.try_get(0)?, row.try_get(1)?);
    }

    let keys = write::client_keys(ops);
    if !keys.is_empty() {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(room, user, cid)| json!([hex(room), hex(user), cid]))
            .collect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, e.client_id AS key FROM json_each(?) k \
             JOIN events e ON e.room_id = unhex(k.value ->> 0) \
               AND e.user_id = unhex(k.value ->> 1) AND e.client_id = k.value ->> 2 \
             JOIN users u ON u.id = e.user_id \
             WHERE e.action = {ACTION_NEW}"
        );
        let found = sqlx::query(&sql)
            .bind(Value::from(keys).to_string())
            .fetch_all(&mut *conn)
            .await?;
        for row in &found {
            let key = (
                row.try_get("room_id")?,
                row.try_get("user_id")?,
                row.try_get("key")?,
            );
            known
                .seen
                .insert(key, rows::event(row).map_err(|e| e.to_string()));
        }
    }

    let targets = write::targets_of(ops);
    if !targets.is_empty() {
        let ids: Vec<Value> = targets.iter().map(hex).collect();
        let found = sqlx::query(
            "SELECT id, room_id, user_id FROM messages \
             WHERE id IN (SELECT unhex(value) FROM json_each(?))",
        )
        .bind(Value::from(ids).to_string())
        .fetch_all(&mut *conn)
        .await?;
        for row in &found {
            let live = Live {
                room: row.try_get(1)?,
                author: row.try_get(2)?,
            };
            known.live.insert(row.try_get(0)?, live);
        }
    }

    let (rows, outcomes) = write::plan(ops, known);
    if rows.is_empty() {
        sqlx::query("COMMIT").execute(&mut *conn).await?;
    } else {
        write_rows_and_commit(conn, rows).await?;
    }
    Ok(outcomes)
}

/// A uuid as the hex string `unhex()` turns back into the stored blob.
fn hex(id: &Uuid) -> Value {
    Value::from(id.simple().to_string())
}

/// Writes a planned batch and commits it, in one round trip: one
/// statement per table, rows as JSON arrays (an empty array writes
/// nothing). Order matters (SQLite runs them one after the other): deleted
/// bodies are blanked after this batch's events are in.
async fn write_rows_and_commit(
    conn: &mut SqliteConnection,
    rows: write::Rows,
) -> Result<(), sqlx::Error> {
    let seqs: Vec<Value> = rows
        .room_ids
        .iter()
        .zip(&rows.room_seqs)
        .map(|(id, seq)| json!([hex(id), seq]))
        .collect();
    let posted: Vec<Value> = (0..rows.msg_ids.len())
        .map(|i| {
            json!([
                hex(&rows.msg_ids[i]),
                hex(&rows.msg_rooms[i]),
                hex(&rows.msg_users[i]),
                rows.msg_seqs[i],
                rows.msg_bodies[i],
                rows.msg_created[i],
                rows.msg_client_ids[i],
            ])
        })
        .collect();
    let edits: Vec<Value> = (0..rows.edit_ids.len())
        .map(|i| {
            json!([
                hex(&rows.edit_ids[i]),
                rows.edit_bodies[i],
                rows.edit_updated[i]
            ])
        })
        .collect();
    let events: Vec<Value> = (0..rows.ev_seqs.len())
        .map(|i| {
            json!([
                hex(&rows.ev_rooms[i]),
                rows.ev_seqs[i],
                rows.ev_actions[i],
                hex(&rows.ev_messages[i]),
                hex(&rows.ev_users[i]),
                rows.ev_bodies[i],
                rows.ev_edited[i],
                rows.ev_created[i],
                rows.ev_updated[i],
                rows.ev_client_ids[i],
            ])
        })
        .collect();
    let deleted: Vec<Value> = rows.deleted.iter().map(hex).collect();
    sqlx::query(WRITE_AND_COMMIT)
        .bind(Value::from(seqs).to_string())
        .bind(Value::from(posted).to_string())
        .bind(Value::from(edits).to_string())
        .bind(Value::from(events).to_string())
        .bind(Value::from(deleted).to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The statements of [`write_rows_and_commit`]: $1 room seqs, $2 posts,
/// $3 edits, $4 events, $5 deleted message ids. `$N`, not `?N`: SQLite
/// sizes a statement using only `?4` as four parameters, and sqlx (0.8)
/// binds the three unnamed ones from the query's arguments and runs out
/// before reaching `?4`, leaving it NULL.
const WRITE_AND_COMMIT: &str = "\
UPDATE rooms SET last_seq = v.value ->> 1 FROM json_each($1) v \
WHERE rooms.id = unhex(v.value ->> 0); \
INSERT INTO messages (id, room_id, user_id, seq, body, created_at, updated_at, edited, client_id) \
SELECT unhex(v.value ->> 0), unhex(v.value ->> 1), unhex(v.value ->> 2), v.value ->> 3, \
v.value ->> 4, v.value ->> 5, v.value ->> 5, 0, v.value ->> 6 FROM json_each($2) v; \
UPDATE messages SET body = v.value ->> 1, edited = 1, updated_at = v.value ->> 2 \
FROM json_each($3) v WHERE messages.id = unhex(v.value ->> 0); \
INSERT INTO events (room_id, seq, action, message_id, user_id, body, edited, created_at, updated_at, client_id) \
SELECT unhex(v.value ->> 0), v.value ->> 1, v.value ->> 2, unhex(v.value ->> 3), \
unhex(v.value ->> 4), v.value ->> 5, v.value ->> 6, v.value ->> 7, v.value ->> 8, v.value ->> 9 \
FROM json_each($4) v; \
DELETE FROM messages WHERE id IN (SELECT unhex(value) FROM json_each($5)); \
UPDATE events SET body = '' WHERE message_id IN (SELECT unhex(value) FROM json_each($5)) AND body <> ''; \
COMMIT";
