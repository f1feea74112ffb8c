//! Passwords and refresh tokens, on either SQL backend.

use async_trait::async_trait;
use roomcast_domain::{RefreshFamily, UserId};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Result, SqlStore, StoredRow, db, now_micros};
use crate::rows;
use crate::{
    CredentialRepository, Credentials, NewRefreshToken, RefreshOwner, RefreshRefusal,
    RotatedRefreshToken, StorageError,
};

#[async_trait]
impl<B: Backend> CredentialRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn credentials(&self, login: &str) -> Result<Option<Credentials>> {
        let sql = format!(
            "SELECT id, username, name, avatar, password_hash FROM users \
             WHERE username = $1 OR {} LIMIT 1",
            B::EMAIL_IS_PARAM_1
        );
        let row = sqlx::query(&sql)
            .bind(login)
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        row.map(|r| {
            Ok(Credentials {
                user: rows::user(&r)?,
                password_hash: r.opt_text("password_hash")?,
            })
        })
        .transpose()
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token.token_hash.as_str())
        .bind(Uuid::from(token.user_id))
        .bind(Uuid::from(token.family))
        .bind(token.expires.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(db::<B>)?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        next: RotatedRefreshToken,
    ) -> Result<std::result::Result<RefreshOwner, RefreshRefusal>> {
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        // Write first, so the transaction takes the write lock at once.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING user_id, family",
        )
        .bind(now)
        .bind(old_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db::<B>)?;
        let outcome = match claimed {
            Some(row) => {
                let owner = owner(&row)?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(next.token_hash.as_str())
                .bind(Uuid::from(owner.user_id))
                .bind(Uuid::from(owner.family))
                .bind(next.expires.unix_micros())
                .execute(&mut *tx)
                .await
                .map_err(db::<B>)?;
                Ok(owner)
            }
            None => {
                let used = sqlx::query(
                    "SELECT family FROM refresh_tokens \
                     WHERE token_hash = $1 AND used_at IS NOT NULL",
                )
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db::<B>)?;
                match used {
                    Some(row) => {
                        // A replay: revoke the whole family.
                        sqlx::query(
                            "UPDATE refresh_tokens SET used_at = $1 \
                             WHERE family = $2 AND used_at IS NULL",
                        )
                        .bind(now)
                        .bind(row.uuid("family")?)
                        .execute(&mut *tx)
                        .await
                        .map_err(db::<B>)?;
                        Err(RefreshRefusal::Reused)
                    }
                    None => Err(RefreshRefusal::Unknown),
                }
            }
        };
        tx.commit().await.map_err(db::<B>)?;
        Ok(outcome)
    }

    async fn refresh_token_owner(&self, hash: &str) -> Result<Option<RefreshOwner>> {
        let row = sqlx::query(
            "SELECT user_id, family FROM refresh_tokens \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(db::<B>)?;
        row.as_ref().map(owner).transpose()
    }

    async fn revoke_refresh_family(&self, family: RefreshFamily) -> Result<()> {
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE family = $2 AND used_at IS NULL")
            .bind(now_micros())
            .bind(Uuid::from(family))
            .execute(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(())
    }
}

/// The `user_id` and `family` columns of a `refresh_tokens` row.
fn owner(row: &impl StoredRow) -> std::result::Result<RefreshOwner, StorageError> {
    Ok(RefreshOwner {
        user_id: UserId::from_uuid(row.uuid("user_id")?),
        family: RefreshFamily::from_uuid(row.uuid("family")?),
    })
}
