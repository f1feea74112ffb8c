//! The message writes both backends hand to their group-commit writers, and
//! the planner both use to decide a whole batch between one read and one
//! write of the database.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use roomcast_domain::{
    ClientId, Event, EventKind, Message, MessageBody, MessageId, RoomId, Timestamp, UserId,
};
use uuid::Uuid;

use crate::{NewMessage, Posted, StorageError};

/// Event actions as both schemas store them.
pub(crate) const ACTION_NEW: i16 = 1;
pub(crate) const ACTION_UPDATE: i16 = 2;
pub(crate) const ACTION_DELETE: i16 = 3;

/// A chat write: what a client asks for, and what a writer task performs
/// inside a batch.
#[derive(Debug)]
pub enum WriteOp {
    Post(NewMessage),
    Edit {
        room: RoomId,
        author: UserId,
        id: MessageId,
        body: MessageBody,
    },
    Delete {
        room: RoomId,
        author: UserId,
        id: MessageId,
    },
}

impl WriteOp {
    /// The room whose sequence this write advances.
    pub fn room(&self) -> RoomId {
        match self {
            WriteOp::Post(new) => new.room_id,
            WriteOp::Edit { room, .. } | WriteOp::Delete { room, .. } => *room,
        }
    }
}

/// What a committed [`WriteOp`] produced.
#[derive(Debug)]
pub enum WriteOutcome {
    /// A post: its `new` event, or the original one for a retried `clientId`.
    Posted(Posted),
    /// An edit's `update` or a delete's `delete` event.
    Event(Event),
}

/// A queued write's outcome, ready once its batch has committed (see
/// [`crate::MessageRepository::queue_write`]).
pub struct PendingWrite(Pin<Box<dyn Future<Output = Result<WriteOutcome, StorageError>> + Send>>);

impl PendingWrite {
    pub fn new(
        outcome: impl Future<Output = Result<WriteOutcome, StorageError>> + Send + 'static,
    ) -> Self {
        Self(Box::pin(outcome))
    }
}

impl Future for PendingWrite {
    type Output = Result<WriteOutcome, StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingWrite")
    }
}

impl WriteOutcome {
    /// The outcome of a post; anything else is a writer bug, not a panic.
    pub fn posted(self) -> Result<Posted, StorageError> {
        match self {
            WriteOutcome::Posted(p) => Ok(p),
            WriteOutcome::Event(_) => Err(out_of_kind()),
        }
    }

    /// The outcome of an edit or a delete.
    pub fn event(self) -> Result<Event, StorageError> {
        match self {
            WriteOutcome::Event(e) => Ok(e),
            WriteOutcome::Posted(_) => Err(out_of_kind()),
        }
    }
}

fn out_of_kind() -> StorageError {
    StorageError::Corrupt("writer answered out of kind".into())
}

/// Outcomes of a batch's writes, in the batch's order.
pub(crate) type Outcomes = Vec<Result<WriteOutcome, StorageError>>;

/// What a batch's checks need, read by the backend inside the batch's
/// transaction, after it holds the rooms (PostgreSQL: row locks; SQLite:
/// the write lock), so nobody changes it before the commit.
#[derive(Debug, Default)]
pub(crate) struct Known {
    /// `last_seq` of each room of the batch that exists.
    pub(crate) last_seq: HashMap<Uuid, i64>,
    /// `new` events already stored under (room, author, clientId) keys of
    /// the batch's posts; a row that does not parse is kept as its error.
    pub(crate) seen: HashMap<(Uuid, Uuid, String), Result<Event, String>>,
    /// The live messages the batch edits or deletes.
    pub(crate) live: HashMap<Uuid, Live>,
}

/// The batch's rooms, sorted and without repeats (the lock order).
pub(crate) fn rooms_of(ops: &[&WriteOp]) -> Vec<Uuid> {
    let mut rooms: Vec<Uuid> = ops.iter().map(|op| Uuid::from(op.room())).collect();
    rooms.sort_unstable();
    rooms.dedup();
    rooms
}

/// The (room, author, clientId) keys of the batch's posts that have one.
pub(crate) fn client_keys(ops: &[&WriteOp]) -> Vec<(Uuid, Uuid, String)> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::Post(new) => new.client_id.as_ref().map(|c| {
                (
                    Uuid::from(new.room_id),
                    Uuid::from(new.author.id),
                    c.as_str().to_owned(),
                )
            }),
            _ => None,
        })
        .collect()
}

/// The messages the batch edits or deletes.
pub(crate) fn targets_of(ops: &[&WriteOp]) -> Vec<Uuid> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::Edit { id, .. } | WriteOp::Delete { id, .. } => Some(Uuid::from(*id)),
            WriteOp::Post(_) => None,
        })
        .collect()
}

/// Decides every write of a batch from what the backend read: each one's
/// outcome (refusals included, which take no seq) and the rows to write.
/// Writes are applied in the batch's order, as one transaction each would
/// be: seqs are consecutive per room, a repeated clientId answers with the
/// first post, one edit per message is kept (the last), a deleted message
/// keeps no edit and its bodies are blanked, this batch's events included.
pub(crate) fn plan(ops: &[&WriteOp], known: Known) -> (Rows, Outcomes) {
    let Known {
        mut last_seq,
        mut seen,
        mut live,
    } = known;
    let locked_seq = last_seq.clone();
    let mut rows = Rows::default();
    // One edit per message: the last one of the batch wins, as it would
    // one transaction at a time.
    let mut edits: HashMap<Uuid, (String, i64)> = HashMap::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            WriteOp::Post(new) => {
                let room = Uuid::from(new.room_id);
                let author = Uuid::from(new.author.id);
                let key = new
                    .client_id
                    .as_ref()
                    .map(|c| (room, author, c.as_str().to_owned()));
                let earlier = key.as_ref().and_then(|k| seen.get(k));
                if let Some(earlier) = earlier {
                    earlier
                        .clone()
                        .map(|event| {
                            WriteOutcome::Posted(Posted {
                                event,
                                duplicate: true,
                            })
                        })
                        .map_err(StorageError::Corrupt)
                } else if let Some(seq) = next_seq(&mut last_seq, room) {
                    let event = post(&mut rows, new, seq);
                    if let Some(key) = key {
                        seen.insert(key, Ok(event.clone()));
                    }
                    Ok(WriteOutcome::Posted(Posted {
                        event,
                        duplicate: false,
                    }))
                } else {
                    Err(StorageError::NotFound)
                }
            }
            WriteOp::Edit {
                room,
                author,
                id,
                body,
            } => match check(&live, *room, *author, *id)
                .and_then(|()| next_seq(&mut last_seq, Uuid::from(*room)).ok_or(Refused::NotFound))
            {
                Err(e) => Err(e.into()),
                Ok(seq) => {
                    let now = Timestamp::now();
                    let (room, id) = (Uuid::from(*room), Uuid::from(*id));
                    edits.insert(id, (body.as_str().to_owned(), now.unix_micros()));
                    rows.event(
                        room,
                        seq,
                        ACTION_UPDATE,
                        id,
                        Uuid::from(*author),
                        body.as_str(),
                        true,
                        now,
                        now,
                        None,
                    );
                    Ok(WriteOutcome::Event(Event {
                        room_id: RoomId::from_uuid(room),
                        seq: seq.max(0) as u64,
                        kind: EventKind::Update {
                            id: MessageId::from_uuid(id),
                            body: body.as_str().to_owned(),
                            edited: true,
                            updated: now,
                        },
                    }))
                }
            },
            WriteOp::Delete { room, author, id } => match check(&live, *room, *author, *id)
                .and_then(|()| next_seq(&mut last_seq, Uuid::from(*room)).ok_or(Refused::NotFound))
            {
                Err(e) => Err(e.into()),
                Ok(seq) => {
                    let now = Timestamp::now();
                    let (room, id) = (Uuid::from(*room), Uuid::from(*id));
                    live.remove(&id);
                    edits.remove(&id);
                    rows.deleted.push(id);
                    // Deleted content is never served again, not even the
                    // edits this same batch logged.
                    for (message, body) in rows.ev_messages.iter().zip(rows.ev_bodies.iter_mut()) {
                        if *message == id {
                            body.clear();
                        }
                    }
                    rows.event(
                        room,
                        seq,
                        ACTION_DELETE,
                        id,
                        Uuid::from(*author),
                        "",
                        false,
                        now,
                        now,
                        None,
                    );
                    Ok(WriteOutcome::Event(Event {
                        room_id: RoomId::from_uuid(room),
                        seq: seq.max(0) as u64,
                        kind: EventKind::Delete {
                            id: MessageId::from_uuid(id),
                        },
                    }))
                }
            },
        };
        outcomes.push(outcome);
    }

    for (room, seq) in &last_seq {
        if locked_seq.get(room) != Some(seq) {
            rows.room_ids.push(*room);
            rows.room_seqs.push(*seq);
        }
    }
    for (id, (body, updated)) in edits {
        rows.edit_ids.push(id);
        rows.edit_bodies.push(body);
        rows.edit_updated.push(updated);
    }
    (rows, outcomes)
}

/// A live message as the batch's checks see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    pub(crate) room: Uuid,
    pub(crate) author: Uuid,
}

/// The rows a batch writes, column by column (bound as arrays).
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) room_ids: Vec<Uuid>,
    pub(crate) room_seqs: Vec<i64>,
    pub(crate) msg_ids: Vec<Uuid>,
    pub(crate) msg_rooms: Vec<Uuid>,
    pub(crate) msg_users: Vec<Uuid>,
    pub(crate) msg_seqs: Vec<i64>,
    pub(crate) msg_bodies: Vec<String>,
    pub(crate) msg_created: Vec<i64>,
    pub(crate) msg_client_ids: Vec<Option<String>>,
    pub(crate) edit_ids: Vec<Uuid>,
    pub(crate) edit_bodies: Vec<String>,
    pub(crate) edit_updated: Vec<i64>,
    pub(crate) deleted: Vec<Uuid>,
    pub(crate) ev_rooms: Vec<Uuid>,
    pub(crate) ev_seqs: Vec<i64>,
    pub(crate) ev_actions: Vec<i16>,
    pub(crate) ev_messages: Vec<Uuid>,
    pub(crate) ev_users: Vec<Uuid>,
    pub(crate) ev_bodies: Vec<String>,
    pub(crate) ev_edited: Vec<bool>,
    pub(crate) ev_created: Vec<i64>,
    pub(crate) ev_updated: Vec<i64>,
    pub(crate) ev_client_ids: Vec<Option<String>>,
}

impl Rows {
    /// True when the batch changes nothing (every write refused or repeated).
    pub(crate) fn is_empty(&self) -> bool {
        self.ev_seqs.is_empty()
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        room: Uuid,
        seq: i64,
        action: i16,
        message: Uuid,
        user: Uuid,
        body: &str,
        edited: bool,
        created: Timestamp,
        updated: Timestamp,
        client_id: Option<&str>,
    ) {
        self.ev_rooms.push(room);
        self.ev_seqs.push(seq);
        self.ev_actions.push(action);
        self.ev_messages.push(message);
        self.ev_users.push(user);
        self.ev_bodies.push(body.to_owned());
        self.ev_edited.push(edited);
        self.ev_created.push(created.unix_micros());
        self.ev_updated.push(updated.unix_micros());
        self.ev_client_ids.push(client_id.map(str::to_owned));
    }
}

/// A per-write refusal, decided by the planner (`Copy`, unlike
/// `StorageError`).
#[derive(Debug, Clone, Copy)]
enum Refused {
    NotFound,
    Forbidden,
}

impl From<Refused> for StorageError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::NotFound => StorageError::NotFound,
            Refused::Forbidden => StorageError::Forbidden,
        }
    }
}

/// Takes the room's next seq; `None` when the room does not exist.
fn next_seq(last_seq: &mut HashMap<Uuid, i64>, room: Uuid) -> Option<i64> {
    let seq = last_seq.get_mut(&room)?;
    *seq += 1;
    Some(*seq)
}

/// Checks that `id` is a live message of `room` written by `author`.
fn check(
    live: &HashMap<Uuid, Live>,
    room: RoomId,
    author: UserId,
    id: MessageId,
) -> Result<(), Refused> {
    match live.get(&Uuid::from(id)) {
        Some(m) if m.room == Uuid::from(room) => {
            if m.author == Uuid::from(author) {
                Ok(())
            } else {
                Err(Refused::Forbidden)
            }
        }
        _ => Err(Refused::NotFound),
    }
}

/// Adds a post's message and `new` event to the batch and returns the event.
fn post(rows: &mut Rows, new: &NewMessage, seq: i64) -> Event {
    let id = MessageId::new();
    let now = Timestamp::now();
    let (room, author) = (Uuid::from(new.room_id), Uuid::from(new.author.id));
    let client_id = new.client_id.as_ref().map(ClientId::as_str);
    rows.msg_ids.push(Uuid::from(id));
    rows.msg_rooms.push(room);
    rows.msg_users.push(author);
    rows.msg_seqs.push(seq);
    rows.msg_bodies.push(new.body.as_str().to_owned());
    rows.msg_created.push(now.unix_micros());
    rows.msg_client_ids.push(client_id.map(str::to_owned));
    rows.event(
        room,
        seq,
        ACTION_NEW,
        Uuid::from(id),
        author,
        new.body.as_str(),
        false,
        now,
        now,
        client_id,
    );
    Event {
        room_id: new.room_id,
        seq: seq.max(0) as u64,
        kind: EventKind::New(Message {
            id,
            room_id: new.room_id,
            user_id: new.author.id,
            username: new.author.username.clone(),
            user_avatar: new.author.avatar.clone(),
            body: new.body.as_str().to_owned(),
            created: now,
            updated: now,
            edited: false,
            client_id: new.client_id.clone(),
            seq: seq.max(0) as u64,
        }),
    }
}
