-- The event log partitioned by hash of room id (issue 16): one room's log
-- lives in one partition, so `since` resume, history's seq lookups and the
-- writer's client-id checks each touch one partition's indexes (PostgreSQL
-- prunes the others from `room_id = $1`), and each partition's table and
-- indexes stay a sixteenth of the log: vacuum, retention and index pages
-- scale with the partition, not the whole log.
--
-- 16 partitions, fixed here: hash partitions cannot be split later without
-- rewriting the table, so the count is chosen for a log far past one
-- machine's memory (16 x what one table's indexes comfortably hold) while
-- keeping plans cheap (each statement names its room, so 15 of 16 are
-- pruned at plan or execution time). Every unique rule already starts with
-- the partition key, as PostgreSQL requires: the primary key (room_id, seq)
-- and the idempotent-send index (room_id, user_id, client_id). No foreign
-- key points at events. `messages` stays one table: its primary key is the
-- message id alone, which clients name without their room.
--
-- The path from the single table: this migration rewrites it, in its one
-- transaction (sqlx runs each migration in one): the old table is renamed,
-- the partitioned one created under the old name, every row copied with its
-- seq (INSERT ... SELECT), the indexes built after the copy (faster than
-- maintaining them row by row), the old table dropped. Writes to the log
-- wait for the whole copy: downtime proportional to the log's size (40 s
-- for a million events on the shared 2-core development VM). An operator
-- with a huge log should instead, before upgrading: prune it first
-- (`--event-retention-days`), or create the partitioned table beside the
-- old one by hand, copy in batches while the old server runs, copy the
-- last rows and swap the names in a short maintenance window, then mark
-- this migration applied in `_sqlx_migrations` (see ARCHITECTURE.md).

ALTER TABLE events RENAME TO events_unpartitioned;
-- Index names are per schema: free them for the new table's indexes.
ALTER TABLE events_unpartitioned DROP CONSTRAINT events_pkey;
DROP INDEX events_by_message;
DROP INDEX events_client_id;

-- The same columns, types, defaults and constraint names as migration
-- 0001's table.
CREATE TABLE events (
    room_id    UUID NOT NULL
        CONSTRAINT events_room_id_fkey REFERENCES rooms (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    action     SMALLINT NOT NULL,
    message_id UUID NOT NULL,
    user_id    UUID NOT NULL CONSTRAINT events_user_id_fkey REFERENCES users (id),
    body       TEXT NOT NULL DEFAULT '',
    edited     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    client_id  TEXT
) PARTITION BY HASH (room_id);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE events_p%s PARTITION OF events FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            lpad(i::text, 2, '0'), i);
    END LOOP;
END $$;

INSERT INTO events (room_id, seq, action, message_id, user_id, body, edited,
                    created_at, updated_at, client_id)
    SELECT room_id, seq, action, message_id, user_id, body, edited,
           created_at, updated_at, client_id
    FROM events_unpartitioned;

DROP TABLE events_unpartitioned;

-- Indexes on the parent are created on (and named per) every partition.
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (room_id, seq);
CREATE INDEX events_by_message ON events (message_id);
-- Idempotent sends: one `new` event per (room, author, clientId).
CREATE UNIQUE INDEX events_client_id ON events (room_id, user_id, client_id)
    WHERE client_id IS NOT NULL;

-- Autovacuum analyzes partitions but never a partitioned parent.
ANALYZE events;
