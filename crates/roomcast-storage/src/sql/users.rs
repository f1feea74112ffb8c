//! User accounts, on either SQL backend.

use async_trait::async_trait;
use roomcast_domain::{User, UserId, Username};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Result, SqlStore, db, now_micros};
use crate::{NewUser, UserRepository, rows};

#[async_trait]
impl<B: Backend> UserRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn create_user(&self, new: NewUser) -> Result<User> {
        let id = UserId::new();
        sqlx::query(
            "INSERT INTO users (id, username, email, name, avatar, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6)",
        )
        .bind(Uuid::from(id))
        .bind(new.username.as_str())
        .bind(new.email.as_deref())
        .bind(new.name.as_str())
        .bind(new.password_hash.as_deref())
        .bind(now_micros())
        .execute(&self.pool)
        .await
        .map_err(db::<B>)?;
        Ok(User {
            id,
            username: new.username,
            name: new.name,
            avatar: None,
        })
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, username, name, avatar FROM users WHERE id = $1")
            .bind(Uuid::from(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, username, name, avatar FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        row.as_ref().map(rows::user).transpose()
    }
}
