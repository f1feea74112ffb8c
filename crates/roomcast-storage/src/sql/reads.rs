//! Read positions and unread counts, on either SQL backend. The counts
//! themselves are kept by the schema's triggers (migration 0005): see
//! `crate::read_state`.

use async_trait::async_trait;
use roomcast_domain::{RoomId, Seq, UserId};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Done, Result, SqlStore, db};
use crate::read_state::{READ_STATE_COLUMNS, read_state};
use crate::rows::{self, ROOM_COLUMNS};
use crate::{ReadMark, ReadRepository, ReadState, RoomListing, StorageError};

#[async_trait]
impl<B: Backend> ReadRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn mark_read(&self, room: RoomId, user: UserId, seq: Seq) -> Result<ReadMark> {
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        sqlx::query(B::HOLD_ROOM_WRITES)
            .bind(Uuid::from(room))
            .execute(&mut *tx)
            .await
            .map_err(db::<B>)?;
        // One statement: the target is the asked position clamped to the
        // room's last seq; it moves only forward, adding the messages of
        // others it passes to what the participant has seen.
        let done = sqlx::query(
            "UPDATE participants AS p SET \
                 seen = p.seen + (SELECT count(*) FROM messages m \
                     WHERE m.room_id = p.room_id AND m.seq > p.read_seq \
                     AND m.seq <= t.target AND m.user_id <> p.user_id), \
                 read_seq = t.target \
             FROM (SELECT CASE WHEN $3 < last_seq THEN $3 ELSE last_seq END AS target \
                   FROM rooms WHERE id = $1) AS t \
             WHERE p.room_id = $1 AND p.user_id = $2 AND p.read_seq < t.target",
        )
        .bind(Uuid::from(room))
        .bind(Uuid::from(user))
        .bind(rows::seq_param(seq))
        .execute(&mut *tx)
        .await
        .map_err(db::<B>)?;
        tx.commit().await.map_err(db::<B>)?;
        let state = self
            .read_state(room, user)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(ReadMark {
            state,
            moved: done.rows_affected() == 1,
        })
    }

    async fn read_state(&self, room: RoomId, user: UserId) -> Result<Option<ReadState>> {
        let sql = format!(
            "SELECT {READ_STATE_COLUMNS} FROM participants me JOIN rooms r ON r.id = me.room_id \
             WHERE me.room_id = $1 AND me.user_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        row.as_ref().map(read_state).transpose()
    }

    async fn room_list(&self, user: UserId) -> Result<Vec<RoomListing>> {
        let sql = format!(
            "SELECT {ROOM_COLUMNS}, {READ_STATE_COLUMNS} FROM participants me \
             JOIN rooms r ON r.id = me.room_id JOIN users h ON h.id = r.host_id \
             WHERE me.user_id = $1 ORDER BY r.created_at DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(Uuid::from(user))
            .fetch_all(&self.pool)
            .await
            .map_err(db::<B>)?;
        rows.iter()
            .map(|row| {
                Ok(RoomListing {
                    room: rows::room(row)?,
                    read: read_state(row)?,
                })
            })
            .collect()
    }
}
