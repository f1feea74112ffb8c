//! The message writes both backends hand to their group-commit writers, and
//! the planner both use to decide a whole batch between one read and one
//! write of the database.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{NewMessage, Posted, StorageError};
use roomcast_domain::{
    ClientId, Event, EventKind, Message, MessageBody, MessageId, RoomId, Seq, Timestamp, UserId,
};

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

/// A post's idempotency key: one `new` event per (room, author, clientId).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PostKey {
    pub(crate) room: RoomId,
    pub(crate) author: UserId,
    pub(crate) client_id: ClientId,
}

/// What a batch's checks need, read by the backend inside the batch's
/// transaction, after it holds the rooms (PostgreSQL: row locks; SQLite:
/// the write lock), so nobody changes it before the commit.
#[derive(Debug, Default)]
pub(crate) struct Known {
    /// `last_seq` of each room of the batch that exists.
    pub(crate) last_seq: HashMap<RoomId, i64>,
    /// `new` events already stored under the keys of the batch's posts; a
    /// row that does not parse is kept as its error.
    pub(crate) seen: HashMap<PostKey, Result<Event, String>>,
    /// The live messages the batch edits or deletes.
    pub(crate) live: HashMap<MessageId, Live>,
}

/// A live message as the batch's checks see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    pub(crate) room: RoomId,
    pub(crate) author: UserId,
}

/// The batch's rooms, sorted and without repeats.
pub(crate) fn rooms_of(ops: &[&WriteOp]) -> Vec<RoomId> {
    let mut rooms: Vec<RoomId> = ops.iter().map(|op| op.room()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    rooms
}

/// The keys of the batch's posts that have a clientId.
pub(crate) fn client_keys(ops: &[&WriteOp]) -> Vec<PostKey> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::Post(new) => new.client_id.clone().map(|client_id| PostKey {
                room: new.room_id,
                author: new.author.id,
                client_id,
            }),
            _ => None,
        })
        .collect()
}

/// The messages the batch edits or deletes.
pub(crate) fn targets_of(ops: &[&WriteOp]) -> Vec<MessageId> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::Edit { id, .. } | WriteOp::Delete { id, .. } => Some(*id),
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
    let mut planner = Planner {
        locked_seq: known.last_seq.clone(),
        known,
        edits: HashMap::new(),
        rows: Rows::default(),
    };
    let outcomes = ops
        .iter()
        .map(|op| match op {
            WriteOp::Post(new) => planner.post(new),
            WriteOp::Edit {
                room,
                author,
                id,
                body,
            } => planner.amend(*room, *author, *id, Change::Edit(body)),
            WriteOp::Delete { room, author, id } => {
                planner.amend(*room, *author, *id, Change::Delete)
            }
        })
        .collect();
    (planner.finish(), outcomes)
}

/// Plans a batch of posts as if each of its rooms existed at seq 0 and no
/// clientId had been stored, for a backend that checks both under its
/// locks while it writes (PostgreSQL's one-call path): the rows' and the
/// outcomes' seqs count from 0 in each room until [`rebase`] moves the
/// outcomes onto the rooms' stored `last_seq`. `None` for a batch with an
/// edit or a delete, whose checks need what only a read can tell.
pub(crate) fn plan_posts_from_zero(ops: &[&WriteOp]) -> Option<(Rows, Outcomes)> {
    if !ops.iter().all(|op| matches!(op, WriteOp::Post(_))) {
        return None;
    }
    let known = Known {
        last_seq: rooms_of(ops).into_iter().map(|room| (room, 0)).collect(),
        ..Known::default()
    };
    Some(plan(ops, known))
}

/// Moves outcomes planned from seq 0 onto each room's `last_seq` as it was
/// before the batch (`base`): an event at seq n becomes base + n.
pub(crate) fn rebase(
    outcomes: &mut Outcomes,
    base: &HashMap<RoomId, i64>,
) -> Result<(), StorageError> {
    for outcome in outcomes.iter_mut().flatten() {
        let event = match outcome {
            WriteOutcome::Posted(posted) => &mut posted.event,
            WriteOutcome::Event(event) => event,
        };
        let moved = base
            .get(&event.room_id)
            .and_then(|&base| u64::try_from(base).ok())
            .and_then(|base| base.checked_add(event.seq.get()))
            .ok_or_else(|| StorageError::Corrupt("no base seq for a batch's room".into()))?;
        event.seq = Seq::new(moved);
        if let EventKind::New(message) = &mut event.kind {
            message.seq = event.seq;
        }
    }
    Ok(())
}

/// The planner's state while it walks a batch.
struct Planner {
    /// What was read, updated as the batch's writes are decided.
    known: Known,
    /// `last_seq` as read: rooms whose value differs at the end are written.
    locked_seq: HashMap<RoomId, i64>,
    /// One edit per message: the last one of the batch wins, as it would
    /// one transaction at a time.
    edits: HashMap<MessageId, EditRow>,
    rows: Rows,
}

/// What an edit or a delete does to a live message.
enum Change<'a> {
    Edit(&'a MessageBody),
    Delete,
}

impl Planner {
    /// A post: a repeated clientId answers with the first post, anything
    /// else takes the room's next seq.
    fn post(&mut self, new: &NewMessage) -> Result<WriteOutcome, StorageError> {
        let key = new.client_id.clone().map(|client_id| PostKey {
            room: new.room_id,
            author: new.author.id,
            client_id,
        });
        if let Some(earlier) = key.as_ref().and_then(|k| self.known.seen.get(k)) {
            return earlier
                .clone()
                .map(|event| {
                    WriteOutcome::Posted(Posted {
                        event,
                        duplicate: true,
                    })
                })
                .map_err(StorageError::Corrupt);
        }
        let (seq, event_seq) = self.next_seq(new.room_id)?;
        let id = MessageId::new();
        let now = Timestamp::now();
        self.rows.messages.push(MessageRow {
            id,
            room: new.room_id,
            user: new.author.id,
            seq,
            body: new.body.as_str().to_owned(),
            created: now,
            client_id: new.client_id.clone(),
        });
        self.rows.events.push(EventRow {
            room: new.room_id,
            seq,
            action: ACTION_NEW,
            message: id,
            user: new.author.id,
            body: new.body.as_str().to_owned(),
            edited: false,
            created: now,
            updated: now,
            client_id: new.client_id.clone(),
        });
        let event = Event {
            room_id: new.room_id,
            seq: event_seq,
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
                seq: event_seq,
            }),
        };
        if let Some(key) = key {
            self.known.seen.insert(key, Ok(event.clone()));
        }
        Ok(WriteOutcome::Posted(Posted {
            event,
            duplicate: false,
        }))
    }

    /// An edit or a delete: only of a live message of the room, by its
    /// author; it takes the room's next seq.
    fn amend(
        &mut self,
        room: RoomId,
        author: UserId,
        id: MessageId,
        change: Change<'_>,
    ) -> Result<WriteOutcome, StorageError> {
        match self.known.live.get(&id) {
            Some(m) if m.room == room && m.author == author => {}
            Some(m) if m.room == room => return Err(StorageError::Forbidden),
            _ => return Err(StorageError::NotFound),
        }
        let (seq, event_seq) = self.next_seq(room)?;
        let now = Timestamp::now();
        let (action, body, edited, kind) = match change {
            Change::Edit(body) => {
                let text = body.as_str().to_owned();
                self.edits.insert(
                    id,
                    EditRow {
                        id,
                        body: text.clone(),
                        updated: now,
                    },
                );
                let kind = EventKind::Update {
                    id,
                    body: Some(body.clone()),
                    edited: true,
                    updated: now,
                };
                (ACTION_UPDATE, text, true, kind)
            }
            Change::Delete => {
                self.known.live.remove(&id);
                self.edits.remove(&id);
                self.rows.deleted.push(DeletedRow { room, id });
                // Deleted content is never served again, not even the
                // edits this same batch logged.
                for event in self.rows.events.iter_mut().filter(|e| e.message == id) {
                    event.body.clear();
                }
                (
                    ACTION_DELETE,
                    String::new(),
                    false,
                    EventKind::Delete { id },
                )
            }
        };
        self.rows.events.push(EventRow {
            room,
            seq,
            action,
            message: id,
            user: author,
            body,
            edited,
            created: now,
            updated: now,
            client_id: None,
        });
        Ok(WriteOutcome::Event(Event {
            room_id: room,
            seq: event_seq,
            kind,
        }))
    }

    /// Takes the room's next seq, as rows store it and as events carry
    /// it; `NotFound` when the room does not exist.
    fn next_seq(&mut self, room: RoomId) -> Result<(i64, Seq), StorageError> {
        let stored = self
            .known
            .last_seq
            .get_mut(&room)
            .ok_or(StorageError::NotFound)?;
        *stored += 1;
        let seq = Seq::try_from(*stored).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok((*stored, seq))
    }

    /// The rows to write: the batch's events and messages, plus each room
    /// whose seq moved and each message's last edit.
    fn finish(mut self) -> Rows {
        let mut seqs: Vec<RoomSeq> = self
            .known
            .last_seq
            .iter()
            .filter(|&(room, seq)| self.locked_seq.get(room) != Some(seq))
            .map(|(&room, &last_seq)| RoomSeq { room, last_seq })
            .collect();
        seqs.sort_unstable_by_key(|r| r.room);
        self.rows.seqs = seqs;
        self.rows.edits = self.edits.into_values().collect();
        self.rows
    }
}

/// The rows a batch writes. Each backend turns a row into its columns in
/// one place that names every field, so a new field does not compile until
/// both backends write it.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// Rooms whose `last_seq` moved, with the new value.
    pub(crate) seqs: Vec<RoomSeq>,
    /// Posted messages.
    pub(crate) messages: Vec<MessageRow>,
    /// The last edit of each edited message that survives the batch.
    pub(crate) edits: Vec<EditRow>,
    /// Deleted messages: removed, and their bodies blanked in the log.
    pub(crate) deleted: Vec<DeletedRow>,
    /// The batch's events, in seq order per room.
    pub(crate) events: Vec<EventRow>,
}

impl Rows {
    /// True when the batch changes nothing (every write refused or repeated).
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A room's new `last_seq`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomSeq {
    pub(crate) room: RoomId,
    pub(crate) last_seq: i64,
}

/// A row of `messages`, as a post inserts it (`updated_at` is `created_at`,
/// `edited` false).
#[derive(Debug, Clone)]
pub(crate) struct MessageRow {
    pub(crate) id: MessageId,
    pub(crate) room: RoomId,
    pub(crate) user: UserId,
    pub(crate) seq: i64,
    pub(crate) body: String,
    pub(crate) created: Timestamp,
    pub(crate) client_id: Option<ClientId>,
}

/// A message's new body (and `edited` set).
#[derive(Debug, Clone)]
pub(crate) struct EditRow {
    pub(crate) id: MessageId,
    pub(crate) body: String,
    pub(crate) updated: Timestamp,
}

/// A deleted message, with its room: the log's rows are found by room
/// first (on PostgreSQL the room picks the log's partition).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeletedRow {
    pub(crate) room: RoomId,
    pub(crate) id: MessageId,
}

/// A row of the `events` log.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub(crate) room: RoomId,
    pub(crate) seq: i64,
    pub(crate) action: i16,
    pub(crate) message: MessageId,
    pub(crate) user: UserId,
    pub(crate) body: String,
    pub(crate) edited: bool,
    pub(crate) created: Timestamp,
    pub(crate) updated: Timestamp,
    pub(crate) client_id: Option<ClientId>,
}

#[cfg(test)]
mod tests {
    use roomcast_domain::{User, Username};

    use super::*;

    fn user(name: &str) -> User {
        User {
            id: UserId::new(),
            username: Username::parse(name).expect("username"),
            name: String::new(),
            avatar: None,
        }
    }

    fn post(room: RoomId, author: &User, body: &str, client_id: Option<&str>) -> WriteOp {
        WriteOp::Post(NewMessage {
            room_id: room,
            author: author.clone(),
            body: MessageBody::parse(body).expect("body"),
            client_id: client_id.map(|c| ClientId::parse(c).expect("client id")),
        })
    }

    fn seq_of(outcome: &Result<WriteOutcome, StorageError>) -> Option<u64> {
        match outcome {
            Ok(WriteOutcome::Posted(p)) => Some(p.event.seq.get()),
            Ok(WriteOutcome::Event(e)) => Some(e.seq.get()),
            Err(_) => None,
        }
    }

    #[test]
    fn seqs_are_consecutive_per_room_and_refusals_take_none() {
        let (a, b, gone) = (RoomId::new(), RoomId::new(), RoomId::new());
        let alice = user("alice");
        let ops = [
            post(a, &alice, "1", None),
            post(b, &alice, "2", None),
            post(gone, &alice, "3", None),
            WriteOp::Delete {
                room: a,
                author: alice.id,
                id: MessageId::new(),
            },
            post(a, &alice, "4", None),
        ];
        let known = Known {
            last_seq: HashMap::from([(a, 7), (b, 0)]),
            ..Known::default()
        };
        let ops: Vec<&WriteOp> = ops.iter().collect();
        let (rows, outcomes) = plan(&ops, known);
        let seqs: Vec<Option<u64>> = outcomes.iter().map(seq_of).collect();
        assert_eq!(seqs, [Some(8), Some(1), None, None, Some(9)]);
        assert!(matches!(outcomes[2], Err(StorageError::NotFound)));
        assert!(matches!(outcomes[3], Err(StorageError::NotFound)));
        let mut moved: Vec<(RoomId, i64)> =
            rows.seqs.iter().map(|r| (r.room, r.last_seq)).collect();
        moved.sort_unstable();
        let mut expected = vec![(a, 9), (b, 1)];
        expected.sort_unstable();
        assert_eq!(moved, expected);
        assert_eq!(rows.events.len(), 3);
        assert_eq!(rows.messages.len(), 3);
    }

    #[test]
    fn posts_planned_from_zero_are_rebased_per_room_repeats_included() {
        let (a, b) = (RoomId::new(), RoomId::new());
        let alice = user("alice");
        let ops = [
            post(a, &alice, "1", Some("k")),
            post(b, &alice, "2", None),
            post(a, &alice, "3", None),
            post(a, &alice, "1 again", Some("k")),
        ];
        let ops: Vec<&WriteOp> = ops.iter().collect();
        let (rows, mut outcomes) = plan_posts_from_zero(&ops).expect("posts only");
        let counts: HashMap<RoomId, i64> = rows.seqs.iter().map(|r| (r.room, r.last_seq)).collect();
        assert_eq!(counts, HashMap::from([(a, 2), (b, 1)]));
        rebase(&mut outcomes, &HashMap::from([(a, 40), (b, 0)])).expect("rebase");
        let seqs: Vec<Option<u64>> = outcomes.iter().map(seq_of).collect();
        assert_eq!(seqs, [Some(41), Some(1), Some(42), Some(41)]);
        let Ok(WriteOutcome::Posted(first)) = &outcomes[0] else {
            panic!("a post")
        };
        let EventKind::New(message) = &first.event.kind else {
            panic!("a new event")
        };
        assert_eq!(
            message.seq, first.event.seq,
            "the message carries its event's seq"
        );
    }

    #[test]
    fn an_edit_or_a_delete_is_not_planned_from_zero() {
        let room = RoomId::new();
        let alice = user("alice");
        let ops = [
            post(room, &alice, "1", None),
            WriteOp::Delete {
                room,
                author: alice.id,
                id: MessageId::new(),
            },
        ];
        let ops: Vec<&WriteOp> = ops.iter().collect();
        assert!(plan_posts_from_zero(&ops).is_none());
    }

    #[test]
    fn a_repeated_client_id_answers_the_first_post() {
        let room = RoomId::new();
        let alice = user("alice");
        let ops = [
            post(room, &alice, "hello", Some("k1")),
            post(room, &alice, "hello again", Some("k1")),
        ];
        let known = Known {
            last_seq: HashMap::from([(room, 0)]),
            ..Known::default()
        };
        let ops: Vec<&WriteOp> = ops.iter().collect();
        let (rows, mut outcomes) = plan(&ops, known);
        let second = outcomes
            .pop()
            .expect("two")
            .expect("ok")
            .posted()
            .expect("post");
        let first = outcomes
            .pop()
            .expect("two")
            .expect("ok")
            .posted()
            .expect("post");
        assert!(!first.duplicate && second.duplicate);
        assert_eq!(first.event, second.event);
        assert_eq!(rows.events.len(), 1);
    }

    #[test]
    fn only_the_author_amends_and_a_delete_blanks_this_batchs_edits() {
        let room = RoomId::new();
        let (alice, bob) = (user("alice"), user("bob"));
        let id = MessageId::new();
        let body = |s: &str| MessageBody::parse(s).expect("body");
        let ops = [
            WriteOp::Edit {
                room,
                author: bob.id,
                id,
                body: body("not mine"),
            },
            WriteOp::Edit {
                room,
                author: alice.id,
                id,
                body: body("secret"),
            },
            WriteOp::Delete {
                room,
                author: alice.id,
                id,
            },
            WriteOp::Edit {
                room,
                author: alice.id,
                id,
                body: body("too late"),
            },
        ];
        let known = Known {
            last_seq: HashMap::from([(room, 3)]),
            live: HashMap::from([(
                id,
                Live {
                    room,
                    author: alice.id,
                },
            )]),
            ..Known::default()
        };
        let ops: Vec<&WriteOp> = ops.iter().collect();
        let (rows, outcomes) = plan(&ops, known);
        assert!(matches!(outcomes[0], Err(StorageError::Forbidden)));
        assert_eq!(seq_of(&outcomes[1]), Some(4));
        assert_eq!(seq_of(&outcomes[2]), Some(5));
        assert!(matches!(outcomes[3], Err(StorageError::NotFound)));
        assert!(rows.edits.is_empty(), "a deleted message keeps no edit");
        assert_eq!(rows.deleted.iter().map(|d| d.id).collect::<Vec<_>>(), [id]);
        let logged: Vec<(i16, &str)> = rows
            .events
            .iter()
            .map(|e| (e.action, e.body.as_str()))
            .collect();
        assert_eq!(logged, [(ACTION_UPDATE, ""), (ACTION_DELETE, "")]);
    }
}
