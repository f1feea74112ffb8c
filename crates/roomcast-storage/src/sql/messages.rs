//! Messages and the per-room event log, on either SQL backend. Writes go
//! to the backend's group-commit writer; reads and retention use the pool.

use async_trait::async_trait;
use roomcast_domain::{Event, Message, MessageBody, MessageId, RoomId, Seq, Timestamp, UserId};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::{Backend, Done, Result, SqlStore, StoredRow, db};
use crate::rows::{self, EVENT_COLUMNS, MESSAGE_COLUMNS};
use crate::write::{ACTION_NEW, PendingWrite, WriteOp};
use crate::{MessageRepository, NewMessage, Posted, StorageError};

/// Events retention deletes per statement. Each batch is its own short
/// transaction: the writer, which blanks old events' bodies and takes the
/// database's write lock on SQLite, waits for one batch at most, never
/// for a whole night's pruning, and no transaction holds a million row
/// locks (or, on SQLite, the log's one write lock) for minutes.
const PRUNE_BATCH: i64 = 5_000;

impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
{
    /// Drops events older than `before`, at most `batch` per statement,
    /// table by table of the log ([`Backend::EVENT_LOG_TABLES`]): one
    /// partition at a time on PostgreSQL.
    async fn prune_in_batches(&self, before: Timestamp, batch: i64) -> Result<u64> {
        let tables = sqlx::query(B::EVENT_LOG_TABLES)
            .fetch_all(&self.pool)
            .await
            .map_err(db::<B>)?;
        let mut pruned = 0;
        for table in &tables {
            let sql = B::PRUNE_BATCH.replace("{table}", &table.text("name")?);
            loop {
                let done = sqlx::query(&sql)
                    .bind(before.unix_micros())
                    .bind(batch)
                    .execute(&self.pool)
                    .await
                    .map_err(db::<B>)?
                    .rows_affected();
                pruned += done;
                if done < u64::try_from(batch).unwrap_or(0) {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// A history page read through `pool`.
    async fn history_page(
        &self,
        pool: &Pool<B::Db>,
        room: RoomId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let before_seq = match before {
            None => i64::MAX,
            Some(id) => sqlx::query(&format!(
                "SELECT seq FROM events \
                 WHERE room_id = $1 AND message_id = $2 AND action = {ACTION_NEW}"
            ))
            .bind(Uuid::from(room))
            .bind(Uuid::from(id))
            .fetch_optional(pool)
            .await
            .map_err(db::<B>)?
            .ok_or(StorageError::NotFound)?
            .int("seq")?,
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(Uuid::from(room))
            .bind(before_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db::<B>)?;
        let mut page = rows.iter().map(rows::message).collect::<Result<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }
}

#[async_trait]
impl<B: Backend> MessageRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn post_message(&self, new: NewMessage) -> Result<Posted> {
        self.write(WriteOp::Post(new)).await?.posted()
    }

    async fn edit_message(
        &self,
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    ) -> Result<Event> {
        self.write(WriteOp::Edit {
            room,
            author,
            id,
            body,
        })
        .await?
        .event()
    }

    async fn delete_message(&self, room: RoomId, author: UserId, id: MessageId) -> Result<Event> {
        self.write(WriteOp::Delete { room, author, id })
            .await?
            .event()
    }

    async fn queue_write(&self, op: WriteOp) -> Result<PendingWrite> {
        self.backend.queue(op).await
    }

    async fn events_since(&self, room: RoomId, after: Seq, limit: u32) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e JOIN users u ON u.id = e.user_id \
             WHERE e.room_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(Uuid::from(room))
            .bind(rows::seq_param(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db::<B>)?;
        rows.iter().map(rows::event).collect()
    }

    async fn last_seq(&self, room: RoomId) -> Result<Seq> {
        let row = sqlx::query("SELECT last_seq FROM rooms WHERE id = $1")
            .bind(Uuid::from(room))
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?
            .ok_or(StorageError::NotFound)?;
        rows::seq(&row, "last_seq")
    }

    async fn first_kept_seq(&self, room: RoomId) -> Result<Seq> {
        Ok(self.log_bounds(room).await?.1)
    }

    async fn log_bounds(&self, room: RoomId) -> Result<(Seq, Seq)> {
        let row = sqlx::query(
            "SELECT last_seq, \
             COALESCE((SELECT MIN(seq) FROM events WHERE room_id = $1), last_seq + 1) \
             AS first_kept FROM rooms WHERE id = $1",
        )
        .bind(Uuid::from(room))
        .fetch_optional(&self.pool)
        .await
        .map_err(db::<B>)?
        .ok_or(StorageError::NotFound)?;
        Ok((rows::seq(&row, "last_seq")?, rows::seq(&row, "first_kept")?))
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64> {
        self.prune_in_batches(before, PRUNE_BATCH).await
    }

    async fn history(
        &self,
        room: RoomId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // On a replica, a page is whole: finding `before` there means the
        // replica has replayed its commit, and with it every earlier
        // message of the room (a room's seqs commit in order). A `before`
        // not replayed yet is `NotFound`, which reads the primary.
        self.lagging(|pool| self.history_page(pool, room, before, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roomcast_domain::{MessageBody, RoomSlug, Seq, Username, Visibility};

    use super::*;
    use crate::{NewRoom, NewUser, SqliteStore, Storage};

    /// Three rooms of five messages each; returns their ids.
    async fn five_each(store: &Storage) -> Vec<RoomId> {
        let alice = store
            .create_user(NewUser {
                username: Username::parse("alice").expect("name"),
                name: "Alice".into(),
                email: None,
                password_hash: None,
            })
            .await
            .expect("user");
        let mut rooms = Vec::new();
        for i in 0..3 {
            let room = store
                .create_room(NewRoom {
                    host: alice.id,
                    slug: RoomSlug::parse(format!("room-{i}")).expect("slug"),
                    name: "Room".into(),
                    description: String::new(),
                    visibility: Visibility::Public,
                })
                .await
                .expect("room");
            for _ in 0..5 {
                store
                    .post_message(NewMessage {
                        room_id: room.id,
                        author: alice.clone(),
                        body: MessageBody::parse("hello").expect("body"),
                        client_id: None,
                    })
                    .await
                    .expect("post");
            }
            rooms.push(room.id);
        }
        rooms
    }

    /// Batches smaller than the log: retention goes on until a batch comes
    /// back short, and every old event goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_deletes_batch_after_batch_until_none_is_left() {
        let sqlite = Arc::new(SqliteStore::open("sqlite::memory:").await.expect("open"));
        let store: Storage = sqlite.clone();
        let rooms = five_each(&store).await;
        let cutoff = Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 1).expect("ts");
        assert_eq!(sqlite.prune_in_batches(cutoff, 2).await.expect("prune"), 15);
        for room in rooms {
            assert_eq!(
                store.first_kept_seq(room).await.expect("first"),
                Seq::new(6)
            );
            assert_eq!(
                store.history(room, None, 10).await.expect("history").len(),
                5
            );
        }
    }

    /// The same on PostgreSQL's partitions, where a batch deletes by
    /// `ctid` within one partition.
    #[cfg(feature = "test-support")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_retention_deletes_batch_after_batch_in_each_partition() {
        let admin = std::env::var("ROOMCAST_TEST_PG_URL")
            .unwrap_or_else(|_| crate::postgres::TestDatabase::DEFAULT_ADMIN_URL.into());
        let db = crate::postgres::TestDatabase::create(&admin)
            .await
            .expect("create a test database");
        let pg = Arc::new(crate::PgStore::open(db.url()).await.expect("open"));
        let store: Storage = pg.clone();
        let rooms = five_each(&store).await;
        let cutoff = Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 1).expect("ts");
        assert_eq!(pg.prune_in_batches(cutoff, 2).await.expect("prune"), 15);
        for room in rooms {
            assert_eq!(
                store.first_kept_seq(room).await.expect("first"),
                Seq::new(6)
            );
        }
    }
}
