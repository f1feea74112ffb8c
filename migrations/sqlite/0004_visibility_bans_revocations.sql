-- Who may join a room, who may never rejoin it, and which login sessions
-- ended (issue 13).

-- `private` (only the host adds participants) is the default for new rooms;
-- rooms made before visibility existed were open to anyone and stay so.
ALTER TABLE rooms ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private'
    CHECK (visibility IN ('public', 'private'));
UPDATE rooms SET visibility = 'public';

-- Users the host removed: they cannot join again until the host adds them.
CREATE TABLE room_bans (
    room_id   BLOB NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    banned_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

-- Logged-out sessions: their access tokens are refused on every node until
-- they would have expired anyway (`expires_at`), then the row can go.
CREATE TABLE revoked_sessions (
    session    BLOB PRIMARY KEY NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX revoked_sessions_by_time ON revoked_sessions (revoked_at);
