//! Turning PostgreSQL rows back into domain values.

use roomcast_domain::{
    ClientId, Event, EventKind, Message, MessageId, Room, RoomId, RoomSlug, Timestamp, User,
    UserId, Username,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::StorageError;
use crate::write::{ACTION_DELETE, ACTION_NEW, ACTION_UPDATE};

/// Columns [`event`] reads, from `events e JOIN users u`.
pub(crate) const EVENT_COLUMNS: &str = "e.room_id, e.seq, e.action, e.message_id, e.user_id, \
     e.body, e.edited, e.created_at, e.updated_at, e.client_id, u.username, u.avatar";

/// Columns [`room`] reads, from `rooms r JOIN users h ON h.id = r.host_id`.
pub(crate) const ROOM_COLUMNS: &str = "r.id, h.username AS host, r.slug, r.name, r.description, \
     r.created_at, r.updated_at, \
     (SELECT COUNT(*) FROM participants p WHERE p.room_id = r.id) AS participants_count";

/// Columns [`message`] reads, from `messages m JOIN users u`.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.room_id, m.user_id, u.username, u.avatar, \
     m.body, m.created_at, m.updated_at, m.edited, m.client_id, m.seq";

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

fn get<'r, T>(row: &'r PgRow, col: &str) -> Result<T, StorageError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(col).map_err(corrupt)
}

fn ts(row: &PgRow, col: &str) -> Result<Timestamp, StorageError> {
    let micros: i64 = get(row, col)?;
    Timestamp::from_unix_micros(micros).ok_or_else(|| corrupt(format!("{col} out of range")))
}

fn username(row: &PgRow, col: &str) -> Result<Username, StorageError> {
    Username::parse(get::<String>(row, col)?).map_err(corrupt)
}

fn client_id(row: &PgRow, col: &str) -> Result<Option<ClientId>, StorageError> {
    get::<Option<String>>(row, col)?
        .map(|c| ClientId::parse(c).map_err(corrupt))
        .transpose()
}

pub(crate) fn user(row: &PgRow) -> Result<User, StorageError> {
    Ok(User {
        id: UserId::from_uuid(get::<Uuid>(row, "id")?),
        username: username(row, "username")?,
        name: get(row, "name")?,
        avatar: get(row, "avatar")?,
    })
}

pub(crate) fn room(row: &PgRow) -> Result<Room, StorageError> {
    Ok(Room {
        id: RoomId::from_uuid(get::<Uuid>(row, "id")?),
        host: username(row, "host")?,
        slug: RoomSlug::parse(get::<String>(row, "slug")?).map_err(corrupt)?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        created: ts(row, "created_at")?,
        updated: ts(row, "updated_at")?,
        participants_count: get::<i64>(row, "participants_count")?.max(0) as u64,
    })
}

pub(crate) fn message(row: &PgRow) -> Result<Message, StorageError> {
    Ok(Message {
        id: MessageId::from_uuid(get::<Uuid>(row, "id")?),
        room_id: RoomId::from_uuid(get::<Uuid>(row, "room_id")?),
        user_id: UserId::from_uuid(get::<Uuid>(row, "user_id")?),
        username: username(row, "username")?,
        user_avatar: get(row, "avatar")?,
        body: get(row, "body")?,
        created: ts(row, "created_at")?,
        updated: ts(row, "updated_at")?,
        edited: get::<bool>(row, "edited")?,
        client_id: client_id(row, "client_id")?,
        seq: get::<i64>(row, "seq")?.max(0) as u64,
    })
}

pub(crate) fn event(row: &PgRow) -> Result<Event, StorageError> {
    let room_id = RoomId::from_uuid(get::<Uuid>(row, "room_id")?);
    let seq = get::<i64>(row, "seq")?.max(0) as u64;
    let id = MessageId::from_uuid(get::<Uuid>(row, "message_id")?);
    let kind = match get::<i16>(row, "action")? {
        ACTION_NEW => EventKind::New(Message {
            id,
            room_id,
            user_id: UserId::from_uuid(get::<Uuid>(row, "user_id")?),
            username: username(row, "username")?,
            user_avatar: get(row, "avatar")?,
            body: get(row, "body")?,
            created: ts(row, "created_at")?,
            updated: ts(row, "updated_at")?,
            edited: get::<bool>(row, "edited")?,
            client_id: client_id(row, "client_id")?,
            seq,
        }),
        ACTION_UPDATE => EventKind::Update {
            id,
            body: get(row, "body")?,
            edited: get::<bool>(row, "edited")?,
            updated: ts(row, "updated_at")?,
        },
        ACTION_DELETE => EventKind::Delete { id },
        other => return Err(corrupt(format!("unknown event action {other}"))),
    };
    Ok(Event { room_id, seq, kind })
}
