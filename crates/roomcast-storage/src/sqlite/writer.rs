//! Group commit for SQLite: one task owns the only writing connection and
//! commits whatever writes queued up while the previous commit was syncing.
//!
//! Why: one fsync per message caps a writer near 300 messages/s on this
//! class of disk. Here a commit carries every write that arrived during the
//! previous one, so throughput grows with load while each write is still
//! acknowledged only after its own commit. At low load a batch is one write
//! and adds no delay: nothing waits for a timer. SQLite allows one writer at
//! a time anyway, so a single writing connection also makes the room's
//! `seq` trivially gap-free.

use std::io;

use roomcast_domain::{
    ClientId, Event, EventKind, Message, MessageBody, MessageId, RoomId, Timestamp, UserId,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::rows::{self, ACTION_DELETE, ACTION_NEW, ACTION_UPDATE, EVENT_COLUMNS};
use crate::write::{WriteOp, WriteOutcome};
use crate::{CommitPolicy, NewMessage, Posted, StorageError};

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

    pub(crate) async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((op, reply)).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
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
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch).await;
    }
    let _ = conn.close().await;
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
/// found, not the author) and leave the rest of the batch alone because each
/// write checks before it changes anything.
async fn apply(
    conn: &mut SqliteConnection,
    ops: &[&WriteOp],
) -> Result<Vec<Result<WriteOutcome, StorageError>>, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            WriteOp::Post(new) => post(conn, new).await?.map(WriteOutcome::Posted),
            WriteOp::Edit {
                room,
                author,
                id,
                body,
            } => edit(conn, *room, *author, *id, body)
                .await?
                .map(WriteOutcome::Event),
            WriteOp::Delete { room, author, id } => delete(conn, *room, *author, *id)
                .await?
                .map(WriteOutcome::Event),
        };
        outcomes.push(outcome);
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(outcomes)
}

type Step<T> = Result<Result<T, StorageError>, sqlx::Error>;

/// Takes the room's next seq; `None` when the room does not exist.
async fn next_seq(conn: &mut SqliteConnection, room: RoomId) -> Result<Option<u64>, sqlx::Error> {
    let row =
        sqlx::query("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq")
            .bind(Uuid::from(room))
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|r| r.get::<i64, _>(0).max(0) as u64))
}

async fn post(conn: &mut SqliteConnection, new: &NewMessage) -> Step<Posted> {
    if let Some(client_id) = &new.client_id
        && let Some(event) = event_by_client_id(conn, new.room_id, new.author.id, client_id).await?
    {
        return Ok(event.map(|event| Posted {
            event,
            duplicate: true,
        }));
    }
    let Some(seq) = next_seq(conn, new.room_id).await? else {
        return Ok(Err(StorageError::NotFound));
    };
    let id = MessageId::new();
    let now = Timestamp::now();
    let client_id = new.client_id.as_ref().map(ClientId::as_str);
    sqlx::query(
        "INSERT INTO messages (id, room_id, user_id, seq, body, created_at, updated_at, edited, client_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
    )
    .bind(Uuid::from(id))
    .bind(Uuid::from(new.room_id))
    .bind(Uuid::from(new.author.id))
    .bind(seq as i64)
    .bind(new.body.as_str())
    .bind(now.unix_micros())
    .bind(now.unix_micros())
    .bind(client_id)
    .execute(&mut *conn)
    .await?;
    insert_event(
        conn,
        new.room_id,
        seq,
        ACTION_NEW,
        id,
        new.author.id,
        new.body.as_str(),
        false,
        now,
        now,
        client_id,
    )
    .await?;
    let message = Message {
        id,
        room_id: new.room_id,
        user_id: new.author.id,
        username: new.author.username.clone(),
        user_avatar: new.author.avatar.clone(),
        body: new.body.as_str().to_owned(),
        created: now,
        updated: now,
        edited: false,
        client_id: new.client_id.clone(),
    };
    let event = Event {
        room_id: new.room_id,
        seq,
        kind: EventKind::New(message),
    };
    Ok(Ok(Posted {
        event,
        duplicate: false,
    }))
}

async fn event_by_client_id(
    conn: &mut SqliteConnection,
    room: RoomId,
    author: UserId,
    client_id: &ClientId,
) -> Result<Option<Result<Event, StorageError>>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e JOIN users u ON u.id = e.user_id \
         WHERE e.room_id = ? AND e.user_id = ? AND e.client_id = ? AND e.action = {ACTION_NEW}"
    );
    let row = sqlx::query(&sql)
        .bind(Uuid::from(room))
        .bind(Uuid::from(author))
        .bind(client_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| rows::event(&r)))
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    conn: &mut SqliteConnection,
    room: RoomId,
    seq: u64,
    action: i64,
    id: MessageId,
    user: UserId,
    body: &str,
    edited: bool,
    created: Timestamp,
    updated: Timestamp,
    client_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (room_id, seq, action, message_id, user_id, body, edited, created_at, updated_at, client_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(Uuid::from(room))
    .bind(seq as i64)
    .bind(action)
    .bind(Uuid::from(id))
    .bind(Uuid::from(user))
    .bind(body)
    .bind(edited)
    .bind(created.unix_micros())
    .bind(updated.unix_micros())
    .bind(client_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Checks that `id` is a live message of `room` written by `author`.
async fn check_author(
    conn: &mut SqliteConnection,
    room: RoomId,
    author: UserId,
    id: MessageId,
) -> Step<()> {
    let row = sqlx::query("SELECT user_id FROM messages WHERE id = ? AND room_id = ?")
        .bind(Uuid::from(id))
        .bind(Uuid::from(room))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        None => Err(StorageError::NotFound),
        Some(r) if r.get::<Uuid, _>(0) != Uuid::from(author) => Err(StorageError::Forbidden),
        Some(_) => Ok(()),
    })
}

async fn edit(
    conn: &mut SqliteConnection,
    room: RoomId,
    author: UserId,
    id: MessageId,
    body: &MessageBody,
) -> Step<Event> {
    if let Err(e) = check_author(conn, room, author, id).await? {
        return Ok(Err(e));
    }
    let Some(seq) = next_seq(conn, room).await? else {
        return Ok(Err(StorageError::NotFound));
    };
    let now = Timestamp::now();
    sqlx::query("UPDATE messages SET body = ?, edited = 1, updated_at = ? WHERE id = ?")
        .bind(body.as_str())
        .bind(now.unix_micros())
        .bind(Uuid::from(id))
        .execute(&mut *conn)
        .await?;
    insert_event(
        conn,
        room,
        seq,
        ACTION_UPDATE,
        id,
        author,
        body.as_str(),
        true,
        now,
        now,
        None,
    )
    .await?;
    let kind = EventKind::Update {
        id,
        body: body.as_str().to_owned(),
        edited: true,
        updated: now,
    };
    Ok(Ok(Event {
        room_id: room,
        seq,
        kind,
    }))
}

async fn delete(
    conn: &mut SqliteConnection,
    room: RoomId,
    author: UserId,
    id: MessageId,
) -> Step<Event> {
    if let Err(e) = check_author(conn, room, author, id).await? {
        return Ok(Err(e));
    }
    let Some(seq) = next_seq(conn, room).await? else {
        return Ok(Err(StorageError::NotFound));
    };
    let now = Timestamp::now();
    sqlx::query("DELETE FROM messages WHERE id = ?")
        .bind(Uuid::from(id))
        .execute(&mut *conn)
        .await?;
    // Deleted content is never served again, not even by a replay.
    sqlx::query("UPDATE events SET body = '' WHERE message_id = ?")
        .bind(Uuid::from(id))
        .execute(&mut *conn)
        .await?;
    insert_event(
        conn,
        room,
        seq,
        ACTION_DELETE,
        id,
        author,
        "",
        false,
        now,
        now,
        None,
    )
    .await?;
    Ok(Ok(Event {
        room_id: room,
        seq,
        kind: EventKind::Delete { id },
    }))
}
