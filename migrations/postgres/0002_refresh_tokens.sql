-- Refresh tokens, stored as SHA-256 hashes: a database leak does not leak
-- usable tokens. Rotation marks the old row used; presenting a used token
-- again (theft or replay) is refused and revokes its whole family.
CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Every token rotated from one login shares the login's family id.
    family      UUID NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- Set when rotated or revoked: the token can never be used again.
    used_at     BIGINT
);

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
