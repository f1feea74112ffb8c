//! Turning stored rows back into domain values, once for every backend.
//!
//! Each backend's row type says how to read a handful of column types
//! ([`StoredRow`]); the mapping from columns to entities is written here
//! once, with the column lists the queries select.

use roomcast_domain::{
    ClientId, Event, EventKind, Message, MessageBody, MessageId, Room, RoomId, RoomSlug, Scopes,
    Seq, ServiceKeyId, Timestamp, User, UserId, Username, Visibility,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::write::{ACTION_DELETE, ACTION_NEW, ACTION_UPDATE};
use crate::{Admission, ServiceKey, StorageError};

/// Columns [`event`] reads, from `events e JOIN users u`.
pub(crate) const EVENT_COLUMNS: &str = "e.room_id, e.seq, e.action, e.message_id, e.user_id, \
     e.body, e.edited, e.created_at, e.updated_at, e.client_id, u.username, u.avatar";

/// Columns [`room`] reads, from `rooms r JOIN users h ON h.id = r.host_id`.
pub(crate) const ROOM_COLUMNS: &str = "r.id, h.username AS host, r.slug, r.name, r.description, \
     r.created_at, r.updated_at, r.visibility, \
     (SELECT COUNT(*) FROM participants p WHERE p.room_id = r.id) AS participants_count";

/// Columns [`admission`] reads, from `users u LEFT JOIN users h ON
/// h.username = <host> LEFT JOIN rooms r ON r.host_id = h.id AND r.slug =
/// <slug>`: the user's under their own names, the room's renamed where
/// they would clash.
pub(crate) const ADMISSION_COLUMNS: &str = "u.id, u.username, u.name, u.avatar, \
     r.id AS room_id, h.username AS host, r.slug, r.name AS room_name, r.description, \
     r.created_at, r.updated_at, r.visibility, \
     (SELECT COUNT(*) FROM participants p WHERE p.room_id = r.id) AS participants_count, \
     EXISTS (SELECT 1 FROM participants p WHERE p.room_id = r.id AND p.user_id = u.id) \
     AS participant";

/// Columns [`service_key`] reads, from `service_keys k JOIN users u ON
/// u.id = k.bot_user_id`: the bot user's under their own names.
pub(crate) const SERVICE_KEY_COLUMNS: &str = "u.id, u.username, u.name, u.avatar, \
     k.id AS key_id, k.name AS key_name, k.scopes, k.created_at, k.revoked_at";

/// Columns [`message`] reads, from `messages m JOIN users u`.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.room_id, m.user_id, u.username, u.avatar, \
     m.body, m.created_at, m.updated_at, m.edited, m.client_id, m.seq";

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// The column reads the mapping needs, for one backend's row type: each
/// fails with `Corrupt` (never panics) when the column is missing or holds
/// another type.
pub trait StoredRow {
    fn uuid(&self, col: &str) -> Result<Uuid, StorageError>;
    fn int(&self, col: &str) -> Result<i64, StorageError>;
    fn flag(&self, col: &str) -> Result<bool, StorageError>;
    fn text(&self, col: &str) -> Result<String, StorageError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StorageError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StorageError>;
    /// An event's action (SQLite stores an INTEGER, PostgreSQL a SMALLINT).
    fn action(&self) -> Result<i16, StorageError>;
}

macro_rules! stored_row {
    ($row:ty, $action:ty, $get:ident) => {
        impl StoredRow for $row {
            fn uuid(&self, col: &str) -> Result<Uuid, StorageError> {
                self.$get(col).map_err(corrupt)
            }
            fn int(&self, col: &str) -> Result<i64, StorageError> {
                self.$get(col).map_err(corrupt)
            }
            fn flag(&self, col: &str) -> Result<bool, StorageError> {
                self.$get(col).map_err(corrupt)
            }
            fn text(&self, col: &str) -> Result<String, StorageError> {
                self.$get(col).map_err(corrupt)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, StorageError> {
                self.$get(col).map_err(corrupt)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, StorageError> {
                self.$get(col).map_err(corrupt)
            }
            fn action(&self) -> Result<i16, StorageError> {
                let raw: $action = self.$get("action").map_err(corrupt)?;
                i16::try_from(raw).map_err(corrupt)
            }
        }
    };
}

// sqlx rows (`Row::try_get`), and the SQLite writer's rusqlite rows
// (`Row::get`, on its own thread).
stored_row!(SqliteRow, i64, try_get);
stored_row!(PgRow, i16, try_get);
stored_row!(rusqlite::Row<'_>, i64, get);

fn ts<R: StoredRow>(row: &R, col: &str) -> Result<Timestamp, StorageError> {
    let micros = row.int(col)?;
    Timestamp::from_unix_micros(micros).ok_or_else(|| corrupt(format!("{col} out of range")))
}

/// A seq as the schemas store it: a BIGINT that is never negative.
pub(crate) fn seq<R: StoredRow>(row: &R, col: &str) -> Result<Seq, StorageError> {
    Seq::try_from(row.int(col)?).map_err(|e| corrupt(format!("{col}: {e}")))
}

/// A seq as a query parameter. Seqs past `i64::MAX` are never stored, so
/// such a bound compares like the largest storable one.
pub(crate) fn seq_param(seq: Seq) -> i64 {
    i64::try_from(seq.get()).unwrap_or(i64::MAX)
}

fn username<R: StoredRow>(row: &R, col: &str) -> Result<Username, StorageError> {
    Username::parse(row.text(col)?).map_err(corrupt)
}

fn client_id<R: StoredRow>(row: &R, col: &str) -> Result<Option<ClientId>, StorageError> {
    row.opt_text(col)?
        .map(|c| ClientId::parse(c).map_err(corrupt))
        .transpose()
}

pub(crate) fn user<R: StoredRow>(row: &R) -> Result<User, StorageError> {
    Ok(User {
        id: UserId::from_uuid(row.uuid("id")?),
        username: username(row, "username")?,
        name: row.text("name")?,
        avatar: row.opt_text("avatar")?,
    })
}

pub(crate) fn service_key<R: StoredRow>(row: &R) -> Result<ServiceKey, StorageError> {
    let revoked = match row.opt_int("revoked_at")? {
        None => None,
        Some(micros) => Some(
            Timestamp::from_unix_micros(micros)
                .ok_or_else(|| corrupt("revoked_at out of range"))?,
        ),
    };
    Ok(ServiceKey {
        id: ServiceKeyId::from_uuid(row.uuid("key_id")?),
        name: username(row, "key_name")?,
        scopes: Scopes::parse(&row.text("scopes")?).map_err(corrupt)?,
        bot: user(row)?,
        created: ts(row, "created_at")?,
        revoked,
    })
}

pub(crate) fn room<R: StoredRow>(row: &R) -> Result<Room, StorageError> {
    room_named(row, "id", "name")
}

/// The row of an [`ADMISSION_COLUMNS`] query; no row: no such user.
pub(crate) fn admission<R: StoredRow>(row: Option<&R>) -> Result<Admission, StorageError> {
    let Some(row) = row else {
        return Ok(Admission::default());
    };
    let room = match row.opt_text("slug")? {
        Some(_) => Some(room_named(row, "room_id", "room_name")?),
        None => None,
    };
    Ok(Admission {
        user: Some(user(row)?),
        participant: room.is_some() && row.flag("participant")?,
        room,
    })
}

fn room_named<R: StoredRow>(row: &R, id: &str, name: &str) -> Result<Room, StorageError> {
    Ok(Room {
        id: RoomId::from_uuid(row.uuid(id)?),
        host: username(row, "host")?,
        slug: RoomSlug::parse(row.text("slug")?).map_err(corrupt)?,
        name: row.text(name)?,
        description: row.text("description")?,
        created: ts(row, "created_at")?,
        updated: ts(row, "updated_at")?,
        participants_count: u64::try_from(row.int("participants_count")?).map_err(corrupt)?,
        visibility: Visibility::parse(&row.text("visibility")?).map_err(corrupt)?,
    })
}

pub(crate) fn message<R: StoredRow>(row: &R) -> Result<Message, StorageError> {
    Ok(Message {
        id: MessageId::from_uuid(row.uuid("id")?),
        room_id: RoomId::from_uuid(row.uuid("room_id")?),
        user_id: UserId::from_uuid(row.uuid("user_id")?),
        username: username(row, "username")?,
        user_avatar: row.opt_text("avatar")?,
        body: row.text("body")?,
        created: ts(row, "created_at")?,
        updated: ts(row, "updated_at")?,
        edited: row.flag("edited")?,
        client_id: client_id(row, "client_id")?,
        seq: seq(row, "seq")?,
    })
}

/// An edit's stored body: empty once its message was deleted; otherwise
/// it was parsed before it was stored, so a bad one is a corrupt row, not
/// a message to show.
fn update_body(text: &str) -> Result<Option<MessageBody>, StorageError> {
    if text.is_empty() {
        return Ok(None);
    }
    MessageBody::parse(text)
        .map(Some)
        .map_err(|e| corrupt(format!("stored edit body: {e}")))
}

pub(crate) fn event<R: StoredRow>(row: &R) -> Result<Event, StorageError> {
    let room_id = RoomId::from_uuid(row.uuid("room_id")?);
    let seq = seq(row, "seq")?;
    let id = MessageId::from_uuid(row.uuid("message_id")?);
    let kind = match row.action()? {
        ACTION_NEW => EventKind::New(Message {
            id,
            room_id,
            user_id: UserId::from_uuid(row.uuid("user_id")?),
            username: username(row, "username")?,
            user_avatar: row.opt_text("avatar")?,
            body: row.text("body")?,
            created: ts(row, "created_at")?,
            updated: ts(row, "updated_at")?,
            edited: row.flag("edited")?,
            client_id: client_id(row, "client_id")?,
            seq,
        }),
        ACTION_UPDATE => EventKind::Update {
            id,
            body: update_body(&row.text("body")?)?,
            edited: row.flag("edited")?,
            updated: ts(row, "updated_at")?,
        },
        ACTION_DELETE => EventKind::Delete { id },
        other => return Err(corrupt(format!("unknown event action {other}"))),
    };
    Ok(Event { room_id, seq, kind })
}
