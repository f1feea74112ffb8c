//! Group commit for PostgreSQL: writer tasks, each owning one connection,
//! commit whatever writes queued up while their previous commit was in
//! flight, as one transaction, then answer each write.
//!
//! Why: one fsync costs ~3 ms here, so one commit per message caps a writer
//! near 300 messages/s. A commit here carries every write that arrived
//! during the previous one, so throughput grows with load while a write is
//! still acknowledged only after its own commit (the transport publishes
//! after the answer). At low load a batch is one write and waits for no
//! timer. This mirrors `sqlite/writer.rs`.
//!
//! A batch of posts (nearly every batch) is one round trip: one call of
//! `roomcast_post_batch` (migration 0007), which locks the batch's rooms,
//! checks that they exist and that no clientId was used before, and writes
//! the rows, as one statement that commits by itself. The batch is planned
//! in Rust before the call, as if each room were at seq 0
//! (`write::plan_posts_from_zero`); the function moves the rows onto each
//! room's `last_seq` under its lock and returns those, and the outcomes
//! are moved the same way (`write::rebase`). When the checks fail it stores
//! nothing and returns NULL, and the batch takes the transaction path.
//!
//! Any other batch (an edit, a delete, a clientId used before, a room
//! gone) is a transaction of a fixed number of round trips whatever its
//! size: `BEGIN`, one statement locking its rooms, one reading what the
//! checks need, one statement writing everything (arrays through `unnest`,
//! with only the parts the batch needs), `COMMIT`. The checks (unknown room
//! or message, not the author, repeated `clientId`) are decided in Rust
//! between the reads and the write, so a refused write fails alone and
//! takes no seq, and nothing in the batch raises an SQL error that would
//! abort the others. Both paths plan with the one planner (`write::plan`).
//!
//! What a batch costs PostgreSQL, measured (ARCHITECTURE.md, a message's
//! path): each statement is planned once per connection (PL/pgSQL keeps
//! the function's plans per connection too), because planning the batch
//! statement for its arguments took longer than running it. The rest is
//! per row (two inserts, four foreign-key checks per post), per statement
//! (executor start-up, about a tenth of the backend's CPU) and per batch
//! (the room locks, the unread-count triggers, `COMMIT`'s WAL flush, and
//! the round trips' context switches, five a batch before the one call).
//!
//! Several writers (`CommitPolicy::writers`, `ROOMCAST_DATABASE_WRITERS`):
//! rooms are spread over them by id, so one room's writes keep one queue
//! (its order) while batches of different rooms commit in parallel. Each
//! writer makes smaller batches, so more writers cost more CPU per message
//! and pay off only when one writer's commits are the bottleneck (a
//! database with spare cores), not on a machine whose cores are full.
//!
//! Sequence numbers: each room's row is locked (`FOR NO KEY UPDATE`) in the
//! transaction (or the one call), `last_seq` is read under the lock and the new value written
//! back before commit. That is the `UPDATE rooms SET last_seq = last_seq + n`
//! serialization, done once per room per batch: another writer, on this
//! process or another, waits on the row lock and then reads the committed
//! value, so seqs have no gap and no duplicate. Rooms are locked in id order
//! so writers never deadlock; message rows are only written by whoever
//! holds their room's lock.
//!
//! Failures: a database failure fails the whole batch with `Unavailable`;
//! the transaction is rolled back (or never committed), so nothing of it is
//! visible. The connection is then dropped and the next batch reconnects,
//! so the writer recovers by itself when the database comes back.
//!
//! One failure is different: the commit (`COMMIT`, or the one call) sent
//! and never answered (the connection broke, the batch timed out). The
//! batch may be stored, and answering `unavailable` would leave a stored
//! event that nobody broadcasts, so other clients would see it only when a
//! later event revealed the gap. The writer settles it instead: on a fresh
//! connection it ends the old session's server process and waits for it to
//! be gone (after that the batch is committed or rolled back for good: the
//! server may not even have read the one call yet), then looks for the
//! batch's first event (the one call's: each room's first post, whose seq
//! also gives the outcomes their seqs). Stored: the batch is answered as
//! committed. Absent: `unavailable`, truly nothing stored. Only if the
//! database stays unreachable does it stay in doubt.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use roomcast_domain::{MessageId, RoomId, UserId};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::query_builder::Separated;
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::rows::{self, EVENT_COLUMNS};
use crate::write::{
    self, ACTION_NEW, DeletedRow, EditRow, EventRow, Known, Live, MessageRow, Outcomes,
    PendingWrite, RoomSeq, Rows, WriteOp, WriteOutcome,
};
use crate::{CommitPolicy, StorageError, metrics};

/// Writes waiting for one writer; senders wait (backpressure) beyond this.
const QUEUE: usize = 8192;
/// Connecting fails after this long instead of leaving senders waiting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A batch that takes longer (a hung server, a lost network) fails with
/// `Unavailable` and its connection is dropped, which rolls it back.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle this long is pinged before its next batch: a server
/// restarted meanwhile shows there, where retrying is safe, not in the
/// batch's call, whose failure would leave it in doubt.
const IDLE_PING: Duration = Duration::from_secs(1);
/// How long settling waits for the old session's server process to end.
const END_SESSION_MS: i64 = 3000;

type Reply = oneshot::Sender<Result<WriteOutcome, StorageError>>;
type Job = (WriteOp, Reply);

/// The handles to the writer tasks. Dropping it lets each task finish the
/// writes already queued and end.
#[derive(Debug)]
pub(crate) struct Writers {
    shards: Vec<mpsc::Sender<Job>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Connects `policy.writers` writers; fails if the database cannot be
    /// reached now (later outages are survived).
    pub(crate) async fn start(
        options: &PgConnectOptions,
        policy: CommitPolicy,
    ) -> Result<Self, StorageError> {
        let count = policy.writers.max(1);
        let mut shards = Vec::with_capacity(count);
        let mut tasks = Vec::with_capacity(count);
        // Plan each batch statement once per connection, not per batch:
        // planning the batch statement for its arguments cost 0.6 ms, more
        // than running it (see ARCHITECTURE.md, a message's path). Every
        // statement of a writer finds rows by key, so the one plan that
        // is right whatever the tables' size is index lookups in nested
        // loops; ruling out scans and hash or merge joins makes that the
        // plan even when it is made on a fresh, empty database (where a
        // scan looks cheaper and would be kept as the log grows).
        // JIT off because of that: a plan that still needs a ruled-out
        // node is costed above `jit_above_cost`, and JIT then compiles it
        // on every call (measured: 157 ms a call for a probe statement
        // with one such scan); no writer statement gains from JIT.
        let options = options.clone().options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("enable_bitmapscan", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
            ("jit", "off"),
        ]);
        let options = &options;
        for _ in 0..count {
            let session = Session::open(options)
                .await
                .map_err(StorageError::unavailable)?;
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.push(tokio::spawn(run(
                options.clone(),
                session,
                rx,
                policy.max_batch.max(1),
            )));
            shards.push(tx);
        }
        Ok(Self { shards, tasks })
    }

    /// Queues a write with its room's writer: one queue per room, so the
    /// queue is the room's commit order.
    pub(crate) async fn queue(&self, op: WriteOp) -> Result<PendingWrite, StorageError> {
        // The low bits of a v4/v7 uuid are random: an even spread of rooms.
        let n = self.shards.len().max(1) as u128;
        let shard = (Uuid::from(op.room()).as_u128() % n) as usize;
        let queue = self.shards.get(shard).ok_or_else(writer_gone)?;
        let (reply, answer) = oneshot::channel();
        metrics::enqueue(queue, (op, reply))
            .await
            .map_err(|_| writer_gone())?;
        Ok(PendingWrite::new(async move {
            answer.await.map_err(|_| writer_gone())?
        }))
    }
}

impl Writers {
    /// Whether every writer task still takes writes (a task ends only if
    /// it panicked, or after the store is dropped).
    pub(crate) fn alive(&self) -> Result<(), StorageError> {
        if self.shards.iter().any(|queue| queue.is_closed()) {
            Err(writer_gone())
        } else {
            Ok(())
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        // Each task ends by itself once its queue is drained and closed; a
        // runtime shutting down may cancel it, which loses no acknowledged
        // write (acknowledgements follow commits).
        let running = self.tasks.iter().filter(|t| !t.is_finished()).count();
        tracing::debug!(running, "postgres writers closing");
    }
}

fn writer_gone() -> StorageError {
    StorageError::unavailable(io::Error::other("postgres writer stopped"))
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "connecting to PostgreSQL timed out",
        ))),
    }
}

/// A writer's connection, and which server process serves it: settling an
/// unanswered batch ends that process before it looks (see [`stored`]).
struct Session {
    conn: PgConnection,
    process: ServerProcess,
    /// When the server last answered a batch (see [`IDLE_PING`]).
    answered: Instant,
}

/// A PostgreSQL server process: its pid, and its start time, which tells
/// it from a later process that got the same pid.
#[derive(Debug, Clone)]
struct ServerProcess {
    pid: i32,
    started: String,
}

impl Session {
    async fn open(options: &PgConnectOptions) -> Result<Session, sqlx::Error> {
        let mut conn = connect(options).await?;
        let (pid, started) = sqlx::query_as(
            "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(Session {
            conn,
            process: ServerProcess { pid, started },
            answered: Instant::now(),
        })
    }
}

async fn run(
    options: PgConnectOptions,
    session: Session,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
) {
    let mut conn = Some(session);
    let mut batch = Vec::with_capacity(max_batch.min(64));
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::batch_taken(batch.len());
        commit_batch(&options, &mut conn, &mut batch).await;
    }
    if let Some(session) = conn {
        let _ = session.conn.close().await;
    }
}

/// Applies a batch in one transaction and answers every write in it: each
/// its own outcome after the commit, or `Unavailable` for all if the
/// transaction failed (then nothing of the batch is stored).
async fn commit_batch(
    options: &PgConnectOptions,
    conn: &mut Option<Session>,
    batch: &mut Vec<Job>,
) {
    let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
    match attempt(options, conn, &ops).await {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "postgres batch failed; answered unavailable");
            // Whatever state the connection is in, a new one is clean.
            *conn = None;
            let msg = e.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StorageError::unavailable(io::Error::other(
                    msg.clone(),
                ))));
            }
        }
    }
}

/// Why a batch did not commit, and whether what commits it (`COMMIT`, or
/// the one call) had been sent: then its outcome is unknown and the batch
/// must not be retried.
#[derive(Debug)]
struct Failed {
    error: sqlx::Error,
    committing: bool,
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        Failed {
            error,
            committing: false,
        }
    }
}

/// Runs the batch on the writer's connection, connecting first if it has
/// none. A connection that broke while idle (the server restarted) fails on
/// its ping or first statement; then the batch, which committed nothing, is
/// retried once on a fresh connection, so the first write after an outage
/// succeeds.
async fn attempt(
    options: &PgConnectOptions,
    conn: &mut Option<Session>,
    ops: &[&WriteOp],
) -> Result<Outcomes, sqlx::Error> {
    let mut retried = false;
    loop {
        let live = match conn {
            Some(live) => live,
            None => conn.insert(Session::open(options).await?),
        };
        let process = live.process.clone();
        let mut in_doubt = None;
        let error = match tokio::time::timeout(BATCH_TIMEOUT, apply(live, ops, &mut in_doubt)).await
        {
            Ok(Ok(outcomes)) => {
                live.answered = Instant::now();
                return Ok(outcomes);
            }
            Ok(Err(Failed {
                error,
                committing: false,
            })) if !retried => {
                tracing::warn!(%error, "postgres writer reconnecting");
                *conn = None;
                retried = true;
                continue;
            }
            Ok(Err(failed)) => failed.error,
            Err(_) => sqlx::Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "postgres batch timed out",
            )),
        };
        return match in_doubt {
            Some(doubt) => {
                *conn = None;
                settle(options, &process, doubt, error).await
            }
            None => Err(error),
        };
    }
}

/// A batch whose commit (`COMMIT`, or the one call) may have been sent
/// without an answer.
struct InDoubt {
    outcomes: Outcomes,
    probe: Probe,
}

/// Events that are in the log if and only if the batch committed.
enum Probe {
    /// The transaction path's first event: its seq is known, and its
    /// message id and timestamp are this batch's own.
    Event {
        room: Uuid,
        seq: i64,
        message: Uuid,
        created: i64,
    },
    /// The one-call path's first post in each room (rooms and messages in
    /// the same order): a new message id, so found means this batch, and
    /// its stored seq tells the room's seq before the batch, which the
    /// outcomes are still waiting for.
    FirstPosts {
        rooms: Vec<Uuid>,
        messages: Vec<Uuid>,
    },
}

/// What the probe found.
enum Found {
    Absent,
    Stored,
    /// Stored, from each room's seq before the batch.
    StoredFrom(HashMap<RoomId, i64>),
}

/// Pauses before each attempt to find out whether an unanswered commit
/// was stored: at once, then while the database may be coming back.
const SETTLE_PAUSES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(200),
    Duration::from_secs(1),
];

/// Finds out whether a batch whose commit went unanswered was stored:
/// its outcomes if so, the commit's error if not (or if it cannot tell).
async fn settle(
    options: &PgConnectOptions,
    process: &ServerProcess,
    doubt: InDoubt,
    error: sqlx::Error,
) -> Result<Outcomes, sqlx::Error> {
    tracing::warn!(%error, "postgres commit unanswered; checking whether it was stored");
    for pause in SETTLE_PAUSES {
        tokio::time::sleep(pause).await;
        match tokio::time::timeout(BATCH_TIMEOUT, stored(options, process, &doubt.probe)).await {
            Ok(Ok(Found::Absent)) => return Err(error),
            Ok(Ok(found)) => {
                tracing::info!("the unanswered commit was stored; answering it as committed");
                let mut outcomes = doubt.outcomes;
                if let Found::StoredFrom(base) = found {
                    write::rebase(&mut outcomes, &base)
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                }
                return Ok(outcomes);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the unanswered commit yet"),
            Err(_) => tracing::warn!("checking the unanswered commit timed out"),
        }
    }
    tracing::error!(
        %error,
        "postgres commit still in doubt: answered unavailable; if it was stored, \
         sockets fetch it when the room's next event reveals the gap"
    );
    Err(error)
}

/// Whether the probed events are in the log, read once the batch's old
/// session has ended. Ending it is what makes the answer final: the
/// server may not have read the batch's call yet when the connection
/// broke, and would then run and commit it after a look that found
/// nothing. A process that has ended committed or rolled back for good.
/// (The transaction path's room locks, taken a round trip before its
/// `COMMIT`, would do; the one call takes its locks and commits in one
/// message.) `pg_terminate_backend` ends sessions of the same role, and
/// waits for the end from PostgreSQL 14.
async fn stored(
    options: &PgConnectOptions,
    process: &ServerProcess,
    probe: &Probe,
) -> Result<Found, sqlx::Error> {
    let mut conn = connect(options).await?;
    // No row: the process is gone already; `false`: it has not ended yet.
    let ended: Option<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity \
         WHERE pid = $1 AND backend_start::text = $2",
    )
    .bind(process.pid)
    .bind(&process.started)
    .bind(END_SESSION_MS)
    .fetch_optional(&mut conn)
    .await?;
    if ended == Some(false) {
        return Err(sqlx::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "the unanswered batch's session has not ended yet",
        )));
    }
    let found = match probe {
        Probe::Event {
            room,
            seq,
            message,
            created,
        } => {
            let found: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events \
                 WHERE room_id = $1 AND seq = $2 AND message_id = $3 AND created_at = $4)",
            )
            .bind(room)
            .bind(seq)
            .bind(message)
            .bind(created)
            .fetch_one(&mut conn)
            .await?;
            if found { Found::Stored } else { Found::Absent }
        }
        Probe::FirstPosts { rooms, messages } => {
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT p.room_id, e.seq \
                 FROM unnest($1::uuid[], $2::uuid[]) AS p(room_id, message_id) \
                 JOIN events e USING (room_id, message_id)",
            )
            .bind(rooms)
            .bind(messages)
            .fetch_all(&mut conn)
            .await?;
            if rows.is_empty() {
                Found::Absent
            } else if rows.len() == rooms.len() {
                // The first post in each room is at seq 1 from the base.
                Found::StoredFrom(
                    rows.into_iter()
                        .map(|(room, seq)| (RoomId::from_uuid(room), seq - 1))
                        .collect(),
                )
            } else {
                return Err(sqlx::Error::Protocol("a batch found partly stored".into()));
            }
        }
    };
    let _ = conn.close().await;
    Ok(found)
}

/// Turns one kind of [`Rows`] row into one array per column, bound as
/// `unnest($1::type[], ...) AS v(column, ...)`. Each column is named once,
/// next to its SQL type and the row field it comes from, and the row is
/// destructured without `..`: a field added to the row does not compile
/// until it is written here, and a column cannot be bound out of order.
macro_rules! columns {
    ($(#[$doc:meta])* $name:ident from $row:ident { $($field:ident),+ $(,)? } {
        $($col:ident: $rust:ty as $sql:literal = $value:expr),+ $(,)?
    }) => {
        $(#[$doc])*
        struct $name {
            $($col: Vec<$rust>),+
        }

        impl $name {
            /// The columns' names, in the order `unnest` yields them.
            #[allow(dead_code, reason = "only the inserted kinds need it")]
            const NAMES: &'static str = stringify!($($col),+);

            fn new(rows: Vec<$row>) -> Self {
                let mut arrays = Self { $($col: Vec::with_capacity(rows.len())),+ };
                for $row { $($field),+ } in rows {
                    $(arrays.$col.push($value);)+
                }
                arrays
            }

            /// Binds every column as one array argument, in order.
            fn arrays(self, args: &mut Separated<'_, 'static, Postgres, &'static str>) {
                $(args.push_bind(self.$col).push_unseparated(concat!("::", $sql, "[]"));)+
            }

            /// `unnest(...) AS v(...)`, binding every column.
            fn unnest(self, sql: &mut QueryBuilder<'static, Postgres>) {
                sql.push("unnest(");
                self.arrays(&mut sql.separated(", "));
                sql.push(concat!(") AS v(", stringify!($($col),+), ")"));
            }
        }
    };
}

columns! {
    /// Rooms whose `last_seq` the batch moves.
    SeqColumns from RoomSeq { room, last_seq } {
        id: Uuid as "uuid" = Uuid::from(room),
        last_seq: i64 as "int8" = last_seq,
    }
}

columns! {
    /// The batch's posted messages.
    MessageColumns from MessageRow { id, room, user, seq, body, created, client_id } {
        id: Uuid as "uuid" = Uuid::from(id),
        room_id: Uuid as "uuid" = Uuid::from(room),
        user_id: Uuid as "uuid" = Uuid::from(user),
        seq: i64 as "int8" = seq,
        body: String as "text" = body,
        created_at: i64 as "int8" = created.unix_micros(),
        updated_at: i64 as "int8" = created.unix_micros(),
        client_id: Option<String> as "text" = client_id.map(|c| c.as_str().to_owned()),
    }
}

columns! {
    /// The batch's edits, one per message.
    EditColumns from EditRow { id, body, updated } {
        id: Uuid as "uuid" = Uuid::from(id),
        body: String as "text" = body,
        updated_at: i64 as "int8" = updated.unix_micros(),
    }
}

columns! {
    /// The batch's deleted messages, whose bodies the log blanks.
    DeletedColumns from DeletedRow { room, id } {
        room_id: Uuid as "uuid" = Uuid::from(room),
        message_id: Uuid as "uuid" = Uuid::from(id),
    }
}

columns! {
    /// The batch's events.
    EventColumns from EventRow {
        room, seq, action, message, user, body, edited, created, updated, client_id
    } {
        room_id: Uuid as "uuid" = Uuid::from(room),
        seq: i64 as "int8" = seq,
        action: i16 as "int2" = action,
        message_id: Uuid as "uuid" = Uuid::from(message),
        user_id: Uuid as "uuid" = Uuid::from(user),
        body: String as "text" = body,
        edited: bool as "bool" = edited,
        created_at: i64 as "int8" = created.unix_micros(),
        updated_at: i64 as "int8" = updated.unix_micros(),
        client_id: Option<String> as "text" = client_id.map(|c| c.as_str().to_owned()),
    }
}

/// Everything the batch writes, in one statement, with only the parts the
/// batch needs (a batch of posts neither edits, deletes nor blanks).
/// Data-modifying CTEs all run to completion on the same snapshot, so the
/// parts must not touch the same row twice: the planner (`write::plan`)
/// keeps one edit per message and none for a message it deletes. Deleted
/// bodies are blanked in the event log (older events here, this batch's
/// events before they are written).
fn write_batch(rows: Rows) -> QueryBuilder<'static, Postgres> {
    let Rows {
        seqs,
        messages,
        edits,
        deleted,
        events,
    } = rows;
    let mut sql = QueryBuilder::new("WITH seqs AS (UPDATE rooms r SET last_seq = v.last_seq FROM ");
    SeqColumns::new(seqs).unnest(&mut sql);
    sql.push(" WHERE r.id = v.id)");
    if !messages.is_empty() {
        sql.push(format_args!(
            ", posted AS (INSERT INTO messages ({}) SELECT * FROM ",
            MessageColumns::NAMES
        ));
        MessageColumns::new(messages).unnest(&mut sql);
        sql.push(")");
    }
    if !edits.is_empty() {
        sql.push(
            ", edits AS (UPDATE messages m \
             SET body = v.body, edited = TRUE, updated_at = v.updated_at FROM ",
        );
        EditColumns::new(edits).unnest(&mut sql);
        sql.push(" WHERE m.id = v.id)");
    }
    if !deleted.is_empty() {
        // The log's rows by room and message, so each probes its room's
        // partition only (migration 0008), not all sixteen.
        let ids: Vec<Uuid> = deleted.iter().map(|d| Uuid::from(d.id)).collect();
        sql.push(", gone AS (DELETE FROM messages WHERE id = ANY(")
            .push_bind(ids)
            .push("::uuid[]))")
            .push(", blanked AS (UPDATE events e SET body = '' FROM ");
        DeletedColumns::new(deleted).unnest(&mut sql);
        sql.push(" WHERE e.room_id = v.room_id AND e.message_id = v.message_id AND e.body <> '')");
    }
    sql.push(format_args!(
        " INSERT INTO events ({}) SELECT * FROM ",
        EventColumns::NAMES
    ));
    EventColumns::new(events).unnest(&mut sql);
    sql
}

/// A batch of posts planned from seq 0 (`write::plan_posts_from_zero`) as
/// one call of `roomcast_post_batch` (migration 0007), which locks the
/// rooms, checks that they exist and that no clientId was used, and writes
/// the rows moved onto the rooms' seqs, all in one statement: `SELECT
/// roomcast_post_batch($1, ..., $20)`, one array per column, in the order
/// the function declares them.
fn post_batch(rows: Rows) -> QueryBuilder<'static, Postgres> {
    let Rows {
        seqs,
        messages,
        edits,
        deleted,
        events,
    } = rows;
    debug_assert!(edits.is_empty() && deleted.is_empty(), "posts only");
    let mut sql = QueryBuilder::new("SELECT roomcast_post_batch(");
    let mut args = sql.separated(", ");
    SeqColumns::new(seqs).arrays(&mut args);
    MessageColumns::new(messages).arrays(&mut args);
    EventColumns::new(events).arrays(&mut args);
    sql.push(")");
    sql
}

/// Applies the batch: a batch of posts in one call when the function
/// finds what the plan assumed, otherwise in a transaction. A connection
/// idle for a while is pinged first (see [`IDLE_PING`]).
async fn apply(
    session: &mut Session,
    ops: &[&WriteOp],
    in_doubt: &mut Option<InDoubt>,
) -> Result<Outcomes, Failed> {
    if session.answered.elapsed() >= IDLE_PING {
        session.conn.ping().await?;
    }
    // When the one call stores nothing (a room is gone or a clientId was
    // used before), the transaction path reads which.
    if let Some((rows, outcomes)) = write::plan_posts_from_zero(ops)
        && let Some(outcomes) =
            post_in_one_call(&mut session.conn, rows, outcomes, in_doubt).await?
    {
        return Ok(outcomes);
    }
    in_transaction(&mut session.conn, ops, in_doubt).await
}

/// The one-call path: the batch's outcomes once it is stored, `None` when
/// the function stored nothing because the plan's assumptions failed. From
/// the call on, the batch is in `in_doubt`: the call is what commits it.
async fn post_in_one_call(
    conn: &mut PgConnection,
    rows: Rows,
    outcomes: Outcomes,
    in_doubt: &mut Option<InDoubt>,
) -> Result<Option<Outcomes>, Failed> {
    let rooms: Vec<RoomId> = rows.seqs.iter().map(|r| r.room).collect();
    let (probe_rooms, probe_messages) = rows
        .events
        .iter()
        .filter(|e| e.seq == 1)
        .map(|e| (Uuid::from(e.room), Uuid::from(e.message)))
        .unzip();
    let mut call = post_batch(rows);
    *in_doubt = Some(InDoubt {
        outcomes,
        probe: Probe::FirstPosts {
            rooms: probe_rooms,
            messages: probe_messages,
        },
    });
    let base: Option<Vec<i64>> = call
        .build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| Failed {
            error,
            committing: true,
        })?;
    let doubt = in_doubt.take().ok_or_else(outcomes_lost)?;
    let Some(base) = base else {
        return Ok(None);
    };
    if base.len() != rooms.len() {
        return Err(sqlx::Error::Protocol("a base seq per room expected".into()).into());
    }
    let base: HashMap<RoomId, i64> = rooms.into_iter().zip(base).collect();
    let mut outcomes = doubt.outcomes;
    write::rebase(&mut outcomes, &base).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    Ok(Some(outcomes))
}

fn outcomes_lost() -> Failed {
    Failed::from(sqlx::Error::Protocol("batch outcomes lost".into()))
}

/// The transaction path, for a batch with an edit, a delete or a clientId
/// used before: the outer error aborts the whole batch; inner ones are per
/// write (not found, not the author), decided before anything is written,
/// so they leave the rest of the batch alone.
///
/// Just before `COMMIT` it leaves the batch in `in_doubt`, where the caller
/// finds it if the commit goes unanswered (an error, or a timeout that
/// drops this future).
async fn in_transaction(
    conn: &mut PgConnection,
    ops: &[&WriteOp],
    in_doubt: &mut Option<InDoubt>,
) -> Result<Outcomes, Failed> {
    let rooms: Vec<Uuid> = write::rooms_of(ops).into_iter().map(Uuid::from).collect();
    let mut tx = conn.begin().await?;

    // Lock the batch's rooms in id order: writers on any connection of any
    // process take them in the same order, so they queue and never deadlock.
    let mut known = Known::default();
    let locked = sqlx::query(
        "SELECT id, last_seq FROM rooms WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&rooms)
    .fetch_all(&mut *tx)
    .await?;
    for row in &locked {
        known
            .last_seq
            .insert(RoomId::from_uuid(row.try_get(0)?), row.try_get(1)?);
    }

    // Read under the room locks: nobody else can add or change these rows
    // before this transaction ends.
    let keys = write::client_keys(ops);
    if !keys.is_empty() {
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, k.n \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY \
                 AS k(room_id, user_id, client_id, n) \
             JOIN events e ON e.room_id = k.room_id AND e.user_id = k.user_id AND e.client_id = k.client_id \
             JOIN users u ON u.id = e.user_id \
             WHERE e.action = {ACTION_NEW}"
        );
        let found = sqlx::query(&sql)
            .bind(keys.iter().map(|k| Uuid::from(k.room)).collect::<Vec<_>>())
            .bind(
                keys.iter()
                    .map(|k| Uuid::from(k.author))
                    .collect::<Vec<_>>(),
            )
            .bind(
                keys.iter()
                    .map(|k| k.client_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
        for row in &found {
            // The key this row answers, by its position in the arrays.
            let n: i64 = row.try_get("n")?;
            let key = usize::try_from(n - 1)
                .ok()
                .and_then(|i| keys.get(i))
                .ok_or_else(|| sqlx::Error::Protocol("clientId key out of range".into()))?;
            known
                .seen
                .insert(key.clone(), rows::event(row).map_err(|e| e.to_string()));
        }
    }
    let targets: Vec<Uuid> = write::targets_of(ops).into_iter().map(Uuid::from).collect();
    if !targets.is_empty() {
        let found = sqlx::query("SELECT id, room_id, user_id FROM messages WHERE id = ANY($1)")
            .bind(&targets)
            .fetch_all(&mut *tx)
            .await?;
        for row in &found {
            let live = Live {
                room: RoomId::from_uuid(row.try_get(1)?),
                author: UserId::from_uuid(row.try_get(2)?),
            };
            known
                .live
                .insert(MessageId::from_uuid(row.try_get(0)?), live);
        }
    }

    let (rows, outcomes) = write::plan(ops, known);
    let probe = rows.events.first().map(|first| Probe::Event {
        room: Uuid::from(first.room),
        seq: first.seq,
        message: Uuid::from(first.message),
        created: first.created.unix_micros(),
    });
    if !rows.is_empty() {
        write_batch(rows).build().execute(&mut *tx).await?;
    }

    let Some(probe) = probe else {
        // Nothing written (every write refused or a repeat): the outcomes
        // hold whatever the commit does.
        tx.commit().await?;
        return Ok(outcomes);
    };
    *in_doubt = Some(InDoubt { outcomes, probe });
    tx.commit().await.map_err(|error| Failed {
        error,
        committing: true,
    })?;
    in_doubt
        .take()
        .map(|doubt| doubt.outcomes)
        .ok_or_else(outcomes_lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Health reads this: a writer task that has ended (its queue's
    /// receiver gone) is reported down, not left to fail every write.
    #[test]
    fn writers_with_an_ended_task_are_not_alive() {
        let (first, _kept) = mpsc::channel(1);
        let (second, ended) = mpsc::channel(1);
        let writers = Writers {
            shards: vec![first, second],
            tasks: Vec::new(),
        };
        assert!(writers.alive().is_ok());
        drop(ended);
        assert!(matches!(writers.alive(), Err(StorageError::Unavailable(_))));
    }
}
