//! Service keys and their bot users, on either SQL backend.

use async_trait::async_trait;
use roomcast_domain::{ServiceKeyId, Timestamp, User, UserId, Username};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Done, Result, SqlStore, db, now_micros};
use crate::rows::{self, SERVICE_KEY_COLUMNS};
use crate::{NewServiceKey, ServiceKey, ServiceKeyRepository, StorageError};

#[async_trait]
impl<B: Backend> ServiceKeyRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn create_service_key(&self, new: NewServiceKey) -> Result<ServiceKey> {
        let now = now_micros();
        let created = Timestamp::from_unix_micros(now)
            .ok_or_else(|| StorageError::Corrupt("clock out of range".into()))?;
        let bot = User {
            id: UserId::new(),
            username: new.name.clone(),
            name: new.name.as_str().to_owned(),
            avatar: None,
        };
        let id = ServiceKeyId::new();
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        // No password and no email: nobody can log in as the bot.
        sqlx::query(
            "INSERT INTO users (id, username, email, name, avatar, password_hash, created_at) \
             VALUES ($1, $2, NULL, $3, NULL, NULL, $4)",
        )
        .bind(Uuid::from(bot.id))
        .bind(bot.username.as_str())
        .bind(bot.name.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db::<B>)?;
        let scopes = new.scopes.to_string();
        sqlx::query(
            "INSERT INTO service_keys (id, name, key_hash, scopes, bot_user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::from(id))
        .bind(new.name.as_str())
        .bind(new.key_hash.as_str())
        .bind(scopes.as_str())
        .bind(Uuid::from(bot.id))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db::<B>)?;
        tx.commit().await.map_err(db::<B>)?;
        Ok(ServiceKey {
            id,
            name: new.name,
            scopes: new.scopes,
            bot,
            created,
            revoked: None,
        })
    }

    async fn service_keys(&self) -> Result<Vec<ServiceKey>> {
        let sql = format!(
            "SELECT {SERVICE_KEY_COLUMNS} FROM service_keys k \
             JOIN users u ON u.id = k.bot_user_id ORDER BY k.name"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db::<B>)?;
        rows.iter().map(rows::service_key).collect()
    }

    async fn revoke_service_key(&self, name: &Username) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE service_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(name.as_str())
        .execute(&self.pool)
        .await
        .map_err(db::<B>)?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let exists = sqlx::query("SELECT 1 FROM service_keys WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        match exists {
            Some(_) => Ok(false),
            None => Err(StorageError::NotFound),
        }
    }

    async fn live_service_key(&self, key_hash: &str) -> Result<Option<ServiceKey>> {
        let sql = format!(
            "SELECT {SERVICE_KEY_COLUMNS} FROM service_keys k \
             JOIN users u ON u.id = k.bot_user_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        row.as_ref().map(rows::service_key).transpose()
    }
}
