-- Who may join a room, who may never rejoin it, and which login sessions
-- ended (issue 13). The same tables and rules as migrations/sqlite.

-- `private` (only the host adds participants) is the default for new rooms;
-- rooms made before visibility existed were open to anyone and stay so.
ALTER TABLE rooms ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private'
    CONSTRAINT rooms_visibility_check CHECK (visibility IN ('public', 'private'));
UPDATE rooms SET visibility = 'public';

-- Users the host removed: they cannot join again until the host adds them.
CREATE TABLE room_bans (
    room_id   UUID NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    banned_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Logged-out sessions: their access tokens are refused on every node until
-- they would have expired anyway (`expires_at`), then the row can go.
CREATE TABLE revoked_sessions (
    session    UUID PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX revoked_sessions_by_time ON revoked_sessions (revoked_at);
