//! The room's message list, kept up to date like the seed composable's
//! `messages`: `new` appends, `update` edits in place, `delete` removes.
//!
//! It also remembers the last `seq` applied, which is what a reconnect
//! resumes from (`?since=`). A stored event at or below it is one this list
//! has already applied (a replay overlapping live delivery, a duplicate's
//! answer) and is dropped, so nothing is applied twice.

use roomcast_domain::Seq;
use roomcast_domain::wire::{ChatEvent, ChatMessage, NewFrame, ServerFrame};

/// What [`MessageList::apply`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A stored event after the last one seen: applied.
    Applied,
    /// A stored event at or below the last one seen: dropped.
    Stale,
    /// `reset`: the server no longer has what this list was built from; the
    /// list is emptied and restarts at the server's seq.
    Reset,
    /// Not a stored event (`typing`, `synced`, ...): the list is unchanged.
    Passed,
}

/// The messages of one room, in the order they were posted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageList {
    messages: Vec<NewFrame>,
    last_seq: Seq,
    missed: u64,
}

impl MessageList {
    /// An empty list that has seen everything up to `last_seq`.
    pub fn starting_at(last_seq: Seq) -> Self {
        Self {
            last_seq,
            ..Self::default()
        }
    }

    pub fn messages(&self) -> &[NewFrame] {
        &self.messages
    }

    /// The last stored event's seq applied (or the starting point).
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Events skipped over: a stored event arrived with a seq more than one
    /// past the last. Roomcast never does that; a non-zero count means the
    /// list may be wrong and is worth a reconnect from scratch.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Applies one frame from the server.
    pub fn apply(&mut self, frame: &ServerFrame) -> Applied {
        let message = match frame {
            ServerFrame::Message(m) => m,
            ServerFrame::Event(ChatEvent::Reset { seq }) => {
                self.messages.clear();
                self.last_seq = *seq;
                return Applied::Reset;
            }
            ServerFrame::Event(_) => return Applied::Passed,
        };
        let seq = match message {
            ChatMessage::New(f) => f.seq,
            ChatMessage::Update(f) => f.seq,
            ChatMessage::Delete(f) => f.seq,
        };
        if seq <= self.last_seq {
            return Applied::Stale;
        }
        self.missed += seq.get() - self.last_seq.get() - 1;
        self.last_seq = seq;
        match message {
            ChatMessage::New(new) => match self.position(new) {
                // Cannot happen with distinct seqs; keep the list a set.
                Some(i) => self.messages[i] = new.clone(),
                None => self.messages.push(new.clone()),
            },
            ChatMessage::Update(update) => {
                if let Some(m) = self.messages.iter_mut().rev().find(|m| m.id == update.id) {
                    m.body.clone_from(&update.body);
                    m.edited = update.edited;
                    m.updated = update.updated;
                }
            }
            ChatMessage::Delete(delete) => self.messages.retain(|m| m.id != delete.id),
        }
        Applied::Applied
    }

    fn position(&self, new: &NewFrame) -> Option<usize> {
        self.messages.iter().rposition(|m| m.id == new.id)
    }
}

#[cfg(test)]
mod tests {
    use roomcast_domain::wire::{DeleteFrame, UpdateFrame};
    use roomcast_domain::{MessageId, Timestamp, UserId, Username};

    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId::parse(&format!("0190a6a0-0000-7000-8000-0000000000{n:02x}")).expect("id")
    }

    fn at(second: u8) -> Timestamp {
        Timestamp::parse(&format!("2024-05-01T12:00:{second:02}Z")).expect("ts")
    }

    fn new(seq: u64, n: u8, body: &str) -> ServerFrame {
        ServerFrame::Message(ChatMessage::New(NewFrame {
            id: id(n),
            user: Username::parse("alice").expect("name"),
            user_id: UserId::parse("0190a6a0-0000-7000-8000-0000000000aa").expect("id"),
            body: body.into(),
            created: at(0),
            edited: false,
            updated: at(0),
            user_avatar: None,
            seq: Seq::new(seq),
            client_id: None,
        }))
    }

    fn update(seq: u64, n: u8, body: &str) -> ServerFrame {
        ServerFrame::Message(ChatMessage::Update(UpdateFrame {
            id: id(n),
            body: body.into(),
            edited: true,
            updated: at(9),
            seq: Seq::new(seq),
        }))
    }

    fn delete(seq: u64, n: u8) -> ServerFrame {
        ServerFrame::Message(ChatMessage::Delete(DeleteFrame {
            id: id(n),
            seq: Seq::new(seq),
        }))
    }

    fn bodies(list: &MessageList) -> Vec<&str> {
        list.messages().iter().map(|m| m.body.as_str()).collect()
    }

    #[test]
    fn new_update_and_delete_change_the_list_like_the_seed_composable() {
        let mut list = MessageList::default();
        let steps: [(ServerFrame, Applied, &[&str]); 6] = [
            (new(1, 1, "a"), Applied::Applied, &["a"]),
            (new(2, 2, "b"), Applied::Applied, &["a", "b"]),
            (update(3, 1, "a2"), Applied::Applied, &["a2", "b"]),
            (delete(4, 2), Applied::Applied, &["a2"]),
            // An update or delete of a message the list never had is
            // still an event: it moves the position and changes nothing.
            (update(5, 9, "x"), Applied::Applied, &["a2"]),
            (delete(6, 9), Applied::Applied, &["a2"]),
        ];
        for (frame, want, after) in steps {
            assert_eq!(list.apply(&frame), want, "{frame:?}");
            assert_eq!(bodies(&list), after, "{frame:?}");
        }
        assert_eq!(list.last_seq(), 6);
        assert!(list.messages()[0].edited);
        assert_eq!(list.messages()[0].updated, at(9));
        assert_eq!(list.missed(), 0);
    }

    #[test]
    fn events_at_or_below_the_last_seq_are_dropped_so_nothing_applies_twice() {
        let mut list = MessageList::starting_at(Seq::new(1));
        assert_eq!(list.apply(&new(1, 1, "old")), Applied::Stale);
        assert_eq!(list.apply(&new(2, 2, "b")), Applied::Applied);
        assert_eq!(list.apply(&new(2, 2, "b")), Applied::Stale);
        assert_eq!(list.apply(&delete(2, 2)), Applied::Stale);
        assert_eq!(bodies(&list), ["b"]);
        assert_eq!(list.last_seq(), 2);
    }

    #[test]
    fn a_replay_of_a_deleted_message_ends_without_it() {
        // What `?since=0` sends for a message that was deleted: its `new`
        // with an empty body, then its `delete`.
        let mut list = MessageList::default();
        for frame in [new(1, 1, ""), new(2, 2, "kept"), delete(3, 1)] {
            assert_eq!(list.apply(&frame), Applied::Applied);
        }
        assert_eq!(bodies(&list), ["kept"]);
    }

    #[test]
    fn reset_empties_the_list_and_restarts_at_the_servers_seq() {
        let mut list = MessageList::default();
        list.apply(&new(1, 1, "a"));
        list.apply(&new(2, 2, "b"));
        let reset = ServerFrame::Event(ChatEvent::Reset { seq: Seq::ZERO });
        assert_eq!(list.apply(&reset), Applied::Reset);
        assert!(list.messages().is_empty());
        assert_eq!(list.last_seq(), 0);
        assert_eq!(list.apply(&new(1, 3, "fresh")), Applied::Applied);
        assert_eq!(bodies(&list), ["fresh"]);
    }

    #[test]
    fn ephemeral_and_control_events_pass_through() {
        let mut list = MessageList::starting_at(Seq::new(4));
        let typing = ServerFrame::Event(ChatEvent::Typing {
            user: Username::parse("bob").expect("name"),
        });
        let synced = ServerFrame::Event(ChatEvent::Synced { seq: Seq::new(4) });
        assert_eq!(list.apply(&typing), Applied::Passed);
        assert_eq!(list.apply(&synced), Applied::Passed);
        assert_eq!(list.last_seq(), 4);
    }

    #[test]
    fn a_skipped_seq_is_counted_as_missed() {
        let mut list = MessageList::default();
        list.apply(&new(1, 1, "a"));
        list.apply(&new(4, 2, "b"));
        assert_eq!(list.missed(), 2);
        assert_eq!(list.last_seq(), 4);
    }
}
