//! Messages and the per-room event log, on either SQL backend. Writes go
//! to the backend's group-commit writer; reads and retention use the pool.

use async_trait::async_trait;
use roomcast_domain::{Event, Message, MessageBody, MessageId, RoomId, Seq, Timestamp, UserId};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Done, Result, SqlStore, StoredRow, db};
use crate::rows::{self, EVENT_COLUMNS, MESSAGE_COLUMNS};
use crate::write::{ACTION_NEW, PendingWrite, WriteOp};
use crate::{MessageRepository, NewMessage, Posted, StorageError};

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
        let done = sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(before.unix_micros())
            .execute(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(done.rows_affected())
    }

    async fn history(
        &self,
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
            .fetch_optional(&self.pool)
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
            .fetch_all(&self.pool)
            .await
            .map_err(db::<B>)?;
        let mut page = rows.iter().map(rows::message).collect::<Result<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }
}
