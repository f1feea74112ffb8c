-- Roomcast schema for the embedded SQLite backend.
-- Ids are UUIDs stored as 16-byte BLOBs; instants are microseconds since the
-- Unix epoch (UTC), the precision PostgreSQL keeps too.

CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT UNIQUE COLLATE NOCASE,
    name          TEXT NOT NULL DEFAULT '',
    avatar        TEXT,
    password_hash TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE rooms (
    id          BLOB PRIMARY KEY NOT NULL,
    host_id     BLOB NOT NULL REFERENCES users (id),
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- The room's event sequence: the seq of its latest stored event.
    last_seq    INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT rooms_host_slug_key UNIQUE (host_id, slug)
);

CREATE TABLE participants (
    room_id   BLOB NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

CREATE INDEX participants_by_user ON participants (user_id);

-- The current state of each live message (deleted ones are removed).
CREATE TABLE messages (
    id         BLOB PRIMARY KEY NOT NULL,
    room_id    BLOB NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id),
    -- seq of the message's `new` event: its position in creation order.
    seq        INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    edited     INTEGER NOT NULL DEFAULT 0,
    client_id  TEXT
);

CREATE UNIQUE INDEX messages_by_room_seq ON messages (room_id, seq);

-- The per-room event log: one row per stored event, seq 1, 2, 3... per room.
-- action: 1 new, 2 update, 3 delete. Bodies of deleted messages are blanked.
CREATE TABLE events (
    room_id    BLOB NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    action     INTEGER NOT NULL,
    message_id BLOB NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id),
    body       TEXT NOT NULL DEFAULT '',
    edited     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    client_id  TEXT,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;

CREATE INDEX events_by_message ON events (message_id);
-- Idempotent sends: one `new` event per (room, author, clientId).
CREATE UNIQUE INDEX events_client_id ON events (room_id, user_id, client_id)
    WHERE client_id IS NOT NULL;
