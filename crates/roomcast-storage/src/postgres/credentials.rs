//! Passwords and refresh tokens on PostgreSQL.

use async_trait::async_trait;
use roomcast_domain::UserId;
use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, db, now_micros};
use crate::rows;
use crate::{CredentialRepository, Credentials, NewRefreshToken, RefreshRefusal, StorageError};

type Result<T> = std::result::Result<T, StorageError>;

#[async_trait]
impl CredentialRepository for PgStore {
    async fn credentials(&self, login: &str) -> Result<Option<Credentials>> {
        let row = sqlx::query(
            "SELECT id, username, name, avatar, password_hash FROM users \
             WHERE username = $1 OR lower(email) = lower($1) LIMIT 1",
        )
        .bind(login)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok(Credentials {
                user: rows::user(&r)?,
                password_hash: r
                    .try_get("password_hash")
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
            })
        })
        .transpose()
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&token.token_hash)
        .bind(Uuid::from(token.user_id))
        .bind(token.family)
        .bind(token.expires.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new: NewRefreshToken,
    ) -> Result<std::result::Result<UserId, RefreshRefusal>> {
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Write first, so the transaction takes the write lock at once.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 RETURNING user_id, family",
        )
        .bind(now)
        .bind(old_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let outcome = match claimed {
            Some(row) => {
                let user: Uuid = row.get(0);
                let family: Uuid = row.get(1);
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&new.token_hash)
                .bind(user)
                .bind(family)
                .bind(new.expires.unix_micros())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Ok(UserId::from_uuid(user))
            }
            None => {
                let used = sqlx::query("SELECT family FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL")
                    .bind(old_hash)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                match used {
                    Some(row) => {
                        let family: Uuid = row.get(0);
                        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE family = $2 AND used_at IS NULL")
                            .bind(now)
                            .bind(family)
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                        Err(RefreshRefusal::Reused)
                    }
                    None => Err(RefreshRefusal::Unknown),
                }
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    async fn refresh_token_family(&self, hash: &str) -> Result<Option<(UserId, Uuid)>> {
        let row = sqlx::query(
            "SELECT user_id, family FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|r| (UserId::from_uuid(r.get(0)), r.get(1))))
    }

    async fn revoke_refresh_family(&self, family: Uuid) -> Result<()> {
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE family = $2 AND used_at IS NULL")
            .bind(now_micros())
            .bind(family)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
