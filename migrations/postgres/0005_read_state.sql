-- Read state and unread counts: the same rules as migrations/sqlite's 0005
-- (read that file's header), with statement-level triggers: the message
-- writer stores a whole batch in one statement, so each trigger runs once
-- per batch and updates each room row once, not once per message (which
-- would leave one dead row version per message on the hot `rooms` row).

ALTER TABLE participants ADD COLUMN read_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE participants ADD COLUMN seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN live_messages BIGINT NOT NULL DEFAULT 0;

-- What was there before read state existed counts as read.
UPDATE rooms SET live_messages = (SELECT count(*) FROM messages m WHERE m.room_id = rooms.id);
UPDATE participants p SET read_seq = r.last_seq, seen = r.live_messages
    FROM rooms r WHERE r.id = p.room_id;

CREATE FUNCTION messages_live_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rooms r SET live_messages = r.live_messages + n.count
        FROM (SELECT room_id, count(*) AS count FROM inserted GROUP BY room_id) n
        WHERE r.id = n.room_id;
    UPDATE participants p SET seen = p.seen + n.count
        FROM (SELECT room_id, user_id, count(*) AS count FROM inserted GROUP BY room_id, user_id) n
        WHERE p.room_id = n.room_id AND p.user_id = n.user_id;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_live_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION messages_live_insert();

CREATE FUNCTION messages_live_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rooms r SET live_messages = r.live_messages - d.count
        FROM (SELECT room_id, count(*) AS count FROM removed GROUP BY room_id) d
        WHERE r.id = d.room_id;
    UPDATE participants p SET seen = p.seen - d.count
        FROM (
            SELECT q.room_id, q.user_id, count(*) AS count
            FROM removed x
            JOIN participants q ON q.room_id = x.room_id
                AND (q.user_id = x.user_id OR q.read_seq >= x.seq)
            GROUP BY q.room_id, q.user_id
        ) d
        WHERE p.room_id = d.room_id AND p.user_id = d.user_id;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_live_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION messages_live_delete();

-- A (re)joining participant has read nothing yet, but has seen what they
-- wrote in the room before they left.
CREATE FUNCTION participants_seen_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.seen := (
        SELECT count(*) FROM messages m
        WHERE m.room_id = NEW.room_id AND (m.user_id = NEW.user_id OR m.seq <= NEW.read_seq)
    );
    RETURN NEW;
END $$;

CREATE TRIGGER participants_seen_insert BEFORE INSERT ON participants
    FOR EACH ROW EXECUTE FUNCTION participants_seen_insert();
