-- A batch of posts in one call (issue 17): the group-commit writer's common
-- batch (posts only, nothing refused) as one statement, so it costs one
-- round trip and commits by itself, instead of BEGIN, the room locks, the
-- clientId read, the write and COMMIT in five (see postgres/writer.rs).
--
-- The writer plans the batch in Rust as if every room were at seq 0 and
-- every clientId new; this function holds it to that under the room locks
-- and either stores the batch, moved onto each room's last_seq, or stores
-- nothing and returns NULL (a room is gone or a clientId was stored
-- before), and the writer takes its transaction path, which reads what the
-- checks need first.
--
-- It is a PL/pgSQL function, not one SQL statement, for its snapshots: in
-- a VOLATILE function each statement sees what was committed before it
-- started, so the clientId check, run once the room locks are held, sees
-- every post another writer committed in those rooms. One statement would
-- read with the snapshot taken before it waited for the locks.
--
-- Arguments: the rooms and how many events each gets (`room_counts`), then
-- the `messages` rows and the `events` rows, one array per column, with
-- seqs counted from 0 in each room. Returns each room's last_seq before
-- the batch, in the order of `room_ids`.
CREATE FUNCTION roomcast_post_batch(
    room_ids uuid[], room_counts int8[],
    m_id uuid[], m_room uuid[], m_user uuid[], m_seq int8[], m_body text[],
    m_created int8[], m_updated int8[], m_client text[],
    e_room uuid[], e_seq int8[], e_action int2[], e_message uuid[], e_user uuid[],
    e_body text[], e_edited bool[], e_created int8[], e_updated int8[], e_client text[]
) RETURNS int8[] LANGUAGE plpgsql AS $$
DECLARE
    base int8[];
BEGIN
    -- Lock the rooms in id order, as every writer does, so writers queue
    -- and never deadlock; the locked rows carry the committed last_seq.
    SELECT array_agg(l.last_seq ORDER BY k.n) INTO base
        FROM unnest(room_ids) WITH ORDINALITY AS k(id, n)
        JOIN (SELECT id, last_seq FROM rooms WHERE id = ANY(room_ids)
              ORDER BY id FOR NO KEY UPDATE) AS l USING (id);
    IF cardinality(base) IS DISTINCT FROM cardinality(room_ids) THEN
        RETURN NULL;
    END IF;

    -- Skipped, not run empty, for the batches without a clientId.
    IF cardinality(array_remove(m_client, NULL)) > 0 THEN
        IF EXISTS (
            SELECT FROM unnest(m_room, m_user, m_client) AS k(room_id, user_id, client_id)
            JOIN events e USING (room_id, user_id, client_id)
        ) THEN
            RETURN NULL;
        END IF;
    END IF;

    UPDATE rooms r SET last_seq = r.last_seq + d.n
        FROM unnest(room_ids, room_counts) AS d(id, n)
        WHERE r.id = d.id;
    INSERT INTO messages (id, room_id, user_id, seq, body, created_at, updated_at, client_id)
        SELECT v.id, v.room_id, v.user_id, b.seq + v.seq, v.body, v.created_at, v.updated_at,
               v.client_id
        FROM unnest(m_id, m_room, m_user, m_seq, m_body, m_created, m_updated, m_client)
            AS v(id, room_id, user_id, seq, body, created_at, updated_at, client_id)
        JOIN unnest(room_ids, base) AS b(id, seq) ON b.id = v.room_id;
    INSERT INTO events (room_id, seq, action, message_id, user_id, body, edited, created_at,
                        updated_at, client_id)
        SELECT v.room_id, b.seq + v.seq, v.action, v.message_id, v.user_id, v.body, v.edited,
               v.created_at, v.updated_at, v.client_id
        FROM unnest(e_room, e_seq, e_action, e_message, e_user, e_body, e_edited, e_created,
                    e_updated, e_client)
            AS v(room_id, seq, action, message_id, user_id, body, edited, created_at,
                 updated_at, client_id)
        JOIN unnest(room_ids, base) AS b(id, seq) ON b.id = v.room_id;
    RETURN base;
END $$;
