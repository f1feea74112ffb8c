//! Bans and ended sessions, on either SQL backend.

use async_trait::async_trait;
use roomcast_domain::{RoomId, Timestamp, UserId};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Done, Result, SqlStore, StoredRow, db, now_micros};
use crate::{AccessRepository, StorageError};

#[async_trait]
impl<B: Backend> AccessRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn is_banned(&self, room: RoomId, user: UserId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM room_bans WHERE room_id = $1 AND user_id = $2")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(row.is_some())
    }

    async fn ban_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        let removed = sqlx::query("DELETE FROM participants WHERE room_id = $1 AND user_id = $2")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .execute(&mut *tx)
            .await
            .map_err(db::<B>)?
            .rows_affected()
            == 1;
        if removed {
            sqlx::query(
                "INSERT INTO room_bans (room_id, user_id, banned_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .bind(now_micros())
            .execute(&mut *tx)
            .await
            .map_err(db::<B>)?;
        }
        tx.commit().await.map_err(db::<B>)?;
        Ok(removed)
    }

    async fn readmit_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        sqlx::query("DELETE FROM room_bans WHERE room_id = $1 AND user_id = $2")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .execute(&mut *tx)
            .await
            .map_err(db::<B>)?;
        // An unknown user or room breaks a foreign key: `NotFound`.
        let added = sqlx::query(
            "INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::from(room))
        .bind(Uuid::from(user))
        .bind(now_micros())
        .execute(&mut *tx)
        .await
        .map_err(db::<B>)?
        .rows_affected()
            == 1;
        tx.commit().await.map_err(db::<B>)?;
        Ok(added)
    }

    async fn revoke_session(&self, session: Uuid, expires: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO revoked_sessions (session, revoked_at, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(session)
        .bind(now_micros())
        .bind(expires.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(db::<B>)?;
        Ok(())
    }

    async fn revoked_sessions_since(&self, since: Timestamp) -> Result<Vec<(Uuid, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT session, revoked_at FROM revoked_sessions \
             WHERE revoked_at >= $1 AND expires_at > $2",
        )
        .bind(since.unix_micros())
        .bind(now_micros())
        .fetch_all(&self.pool)
        .await
        .map_err(db::<B>)?;
        rows.iter()
            .map(|row| {
                let at = Timestamp::from_unix_micros(row.int("revoked_at")?)
                    .ok_or_else(|| StorageError::Corrupt("revocation time out of range".into()))?;
                Ok((row.uuid("session")?, at))
            })
            .collect()
    }

    async fn prune_revoked_sessions(&self, now: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < $1")
            .bind(now.unix_micros())
            .execute(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(done.rows_affected())
    }
}
