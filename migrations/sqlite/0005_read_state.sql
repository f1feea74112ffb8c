-- Read state and unread counts (PROTOCOL.md: the `read` frame, PUT .../read,
-- GET /api/rooms' `read_seq` and `unread`).
--
-- unread = rooms.live_messages - participants.seen, where
--   live_messages: the room's messages not deleted;
--   seen: of those, the ones this participant wrote or has read
--         (seq <= read_seq).
-- Both are kept by triggers, so the message writers need not know about
-- them and the room list is O(rooms), never O(messages):
--   a post adds one to the room and to its author's `seen` (an edit
--   changes neither: it is not a new unread message);
--   a delete takes one from the room and from every participant that had
--   counted it as seen (its author, readers past it), so deleting an
--   unread message lowers the count and a read one leaves it.
-- `read_seq` only moves forward (storage checks it), one UPDATE that also
-- adds the newly read messages of others to `seen`.

ALTER TABLE participants ADD COLUMN read_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE participants ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN live_messages INTEGER NOT NULL DEFAULT 0;

-- What was there before read state existed counts as read: clients that
-- never heard of it see nothing change.
UPDATE rooms SET live_messages = (SELECT count(*) FROM messages m WHERE m.room_id = rooms.id);
UPDATE participants SET
    read_seq = (SELECT r.last_seq FROM rooms r WHERE r.id = participants.room_id),
    seen = (SELECT r.live_messages FROM rooms r WHERE r.id = participants.room_id);

CREATE TRIGGER messages_live_insert AFTER INSERT ON messages BEGIN
    UPDATE rooms SET live_messages = live_messages + 1 WHERE id = NEW.room_id;
    UPDATE participants SET seen = seen + 1
        WHERE room_id = NEW.room_id AND user_id = NEW.user_id;
END;

CREATE TRIGGER messages_live_delete AFTER DELETE ON messages BEGIN
    UPDATE rooms SET live_messages = live_messages - 1 WHERE id = OLD.room_id;
    UPDATE participants SET seen = seen - 1
        WHERE room_id = OLD.room_id AND (user_id = OLD.user_id OR read_seq >= OLD.seq);
END;

-- A (re)joining participant has read nothing yet, but has seen what they
-- wrote in the room before they left.
CREATE TRIGGER participants_seen_insert AFTER INSERT ON participants BEGIN
    UPDATE participants SET seen = (
        SELECT count(*) FROM messages m
        WHERE m.room_id = NEW.room_id AND (m.user_id = NEW.user_id OR m.seq <= NEW.read_seq)
    ) WHERE room_id = NEW.room_id AND user_id = NEW.user_id;
END;
