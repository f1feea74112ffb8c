-- Roomcast schema for the PostgreSQL backend: the same tables and rules as
-- migrations/sqlite, in native types. Instants stay microseconds since the
-- Unix epoch (UTC) in BIGINT so both backends store identical values.
-- Constraint and index names matter: storage maps them to domain errors.

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    username      TEXT NOT NULL CONSTRAINT users_username_key UNIQUE,
    email         TEXT,
    name          TEXT NOT NULL DEFAULT '',
    avatar        TEXT,
    password_hash TEXT,
    created_at    BIGINT NOT NULL
);

-- Emails are unique case-insensitively, like SQLite's COLLATE NOCASE.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- fillfactor leaves room on each page so the hot `last_seq` update stays a
-- HOT update (no index touched, no page split) under a stream of messages.
CREATE TABLE rooms (
    id          UUID PRIMARY KEY,
    host_id     UUID NOT NULL REFERENCES users (id),
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- The room's event sequence: the seq of its latest stored event.
    last_seq    BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT rooms_host_slug_key UNIQUE (host_id, slug)
) WITH (fillfactor = 50);

CREATE TABLE participants (
    room_id   UUID NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE INDEX participants_by_user ON participants (user_id);

-- The current state of each live message (deleted ones are removed).
CREATE TABLE messages (
    id         UUID PRIMARY KEY,
    room_id    UUID NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id),
    -- seq of the message's `new` event: its position in creation order.
    seq        BIGINT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    edited     BOOLEAN NOT NULL DEFAULT FALSE,
    client_id  TEXT
);

CREATE UNIQUE INDEX messages_by_room_seq ON messages (room_id, seq);

-- The per-room event log: one row per stored event, seq 1, 2, 3... per room.
-- action: 1 new, 2 update, 3 delete. Bodies of deleted messages are blanked.
CREATE TABLE events (
    room_id    UUID NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    action     SMALLINT NOT NULL,
    message_id UUID NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id),
    body       TEXT NOT NULL DEFAULT '',
    edited     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    client_id  TEXT,
    PRIMARY KEY (room_id, seq)
);

CREATE INDEX events_by_message ON events (message_id);
-- Idempotent sends: one `new` event per (room, author, clientId).
CREATE UNIQUE INDEX events_client_id ON events (room_id, user_id, client_id)
    WHERE client_id IS NOT NULL;
