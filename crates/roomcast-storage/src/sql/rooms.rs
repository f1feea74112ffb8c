//! Rooms and who takes part in them, on either SQL backend.

use async_trait::async_trait;
use roomcast_domain::{Room, RoomId, RoomSlug, User, UserId, Username};
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Backend, Done, Result, SqlStore, StoredRow, db, now_micros};
use crate::rows::{self, ADMISSION_COLUMNS, ROOM_COLUMNS};
use crate::{Admission, NewRoom, RoomRepository, RoomSeed, SeededRoom};

#[async_trait]
impl<B: Backend> RoomRepository for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn create_room(&self, new: NewRoom) -> Result<Room> {
        let id = RoomId::new();
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        // An unknown host breaks the foreign key: `NotFound`.
        sqlx::query(
            "INSERT INTO rooms (id, host_id, slug, name, description, created_at, updated_at, \
             visibility) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::from(id))
        .bind(Uuid::from(new.host))
        .bind(new.slug.as_str())
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(now)
        .bind(now)
        .bind(new.visibility.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db::<B>)?;
        sqlx::query("INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(Uuid::from(id))
            .bind(Uuid::from(new.host))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db::<B>)?;
        tx.commit().await.map_err(db::<B>)?;
        self.room_by_id(Uuid::from(id)).await
    }

    async fn room_by_address(&self, host: &Username, slug: &RoomSlug) -> Result<Option<Room>> {
        let sql = format!(
            "SELECT {ROOM_COLUMNS} FROM rooms r JOIN users h ON h.id = r.host_id \
             WHERE h.username = $1 AND r.slug = $2"
        );
        let row = sqlx::query(&sql)
            .bind(host.as_str())
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        row.as_ref().map(rows::room).transpose()
    }

    async fn is_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM participants WHERE room_id = $1 AND user_id = $2")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(row.is_some())
    }

    async fn admission(&self, user: UserId, host: &Username, slug: &RoomSlug) -> Result<Admission> {
        let sql = format!(
            "SELECT {ADMISSION_COLUMNS} FROM users u \
             LEFT JOIN users h ON h.username = $1 \
             LEFT JOIN rooms r ON r.host_id = h.id AND r.slug = $2 \
             WHERE u.id = $3"
        );
        let row = sqlx::query(&sql)
            .bind(host.as_str())
            .bind(slug.as_str())
            .bind(Uuid::from(user))
            .fetch_optional(&self.pool)
            .await
            .map_err(db::<B>)?;
        rows::admission(row.as_ref())
    }

    async fn add_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        // An unknown room or user breaks a foreign key: `NotFound`.
        let done = sqlx::query(
            "INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::from(room))
        .bind(Uuid::from(user))
        .bind(now_micros())
        .execute(&self.pool)
        .await
        .map_err(db::<B>)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_participant(&self, room: RoomId, user: UserId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM participants WHERE room_id = $1 AND user_id = $2")
            .bind(Uuid::from(room))
            .bind(Uuid::from(user))
            .execute(&self.pool)
            .await
            .map_err(db::<B>)?;
        Ok(done.rows_affected() == 1)
    }

    async fn participants(&self, room: RoomId) -> Result<Vec<User>> {
        // A list to show: a replica's, a moment old, will do. Who may join
        // or post is decided by `admission` and `is_participant`, on the
        // primary.
        self.lagging(|pool| async move {
            let rows = sqlx::query(
                "SELECT u.id, u.username, u.name, u.avatar FROM participants p \
                 JOIN users u ON u.id = p.user_id WHERE p.room_id = $1 ORDER BY u.username",
            )
            .bind(Uuid::from(room))
            .fetch_all(pool)
            .await
            .map_err(db::<B>)?;
            rows.iter().map(rows::user).collect()
        })
        .await
    }

    async fn rooms_of(&self, user: UserId) -> Result<Vec<Room>> {
        self.rooms_where(
            "JOIN participants me ON me.room_id = r.id WHERE me.user_id = $1 \
             ORDER BY r.created_at DESC",
            Uuid::from(user),
        )
        .await
    }

    async fn seed_rooms(&self, seeds: &[RoomSeed]) -> Result<Vec<SeededRoom>> {
        let now = now_micros();
        let mut tx = self.pool.begin().await.map_err(db::<B>)?;
        let mut out = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let mut members = Vec::with_capacity(seed.members.len());
            for name in std::iter::once(&seed.host).chain(&seed.members) {
                sqlx::query(
                    "INSERT INTO users (id, username, name, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (username) DO NOTHING",
                )
                .bind(Uuid::from(UserId::new()))
                .bind(name.as_str())
                .bind(name.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db::<B>)?;
                let row =
                    sqlx::query("SELECT id, username, name, avatar FROM users WHERE username = $1")
                        .bind(name.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db::<B>)?;
                members.push(rows::user(&row)?);
            }
            let host = members.remove(0);
            sqlx::query(
                // Seeded rooms (fixtures, benchmarks) are public: their
                // members are listed, and outsiders get 403, not 404.
                "INSERT INTO rooms (id, host_id, slug, name, description, created_at, updated_at, \
                 visibility) VALUES ($1, $2, $3, $4, '', $5, $6, 'public') \
                 ON CONFLICT (host_id, slug) DO NOTHING",
            )
            .bind(Uuid::from(RoomId::new()))
            .bind(Uuid::from(host.id))
            .bind(seed.slug.as_str())
            .bind(seed.slug.as_str())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db::<B>)?;
            let room_id = sqlx::query("SELECT id FROM rooms WHERE host_id = $1 AND slug = $2")
                .bind(Uuid::from(host.id))
                .bind(seed.slug.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db::<B>)?
                .uuid("id")?;
            for user in std::iter::once(&host).chain(&members) {
                sqlx::query(
                    "INSERT INTO participants (room_id, user_id, joined_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(room_id)
                .bind(Uuid::from(user.id))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db::<B>)?;
            }
            // The host is a member only if the seed lists them.
            if seed.members.contains(&host.username) {
                members.retain(|m| m.id != host.id);
                members.insert(0, host);
            }
            out.push((room_id, members));
        }
        tx.commit().await.map_err(db::<B>)?;
        let mut seeded = Vec::with_capacity(out.len());
        for (room_id, members) in out {
            let room = self.room_by_id(room_id).await?;
            seeded.push(SeededRoom { room, members });
        }
        Ok(seeded)
    }
}
