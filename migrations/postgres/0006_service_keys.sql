-- Service keys (issue 18): credentials for programs that publish into
-- rooms as a bot user. The same table and rules as migrations/sqlite.
CREATE TABLE service_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    -- SHA-256 of the whole key (`rk_...`), lowercase hex.
    key_hash    TEXT NOT NULL,
    -- Scope names separated by spaces (`publish`, `read`).
    scopes      TEXT NOT NULL,
    -- The account the key acts as: messages it posts are this user's.
    bot_user_id UUID NOT NULL REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    -- Set once, when revoked; a revoked key is refused and never live again.
    revoked_at  BIGINT,
    CONSTRAINT service_keys_name_key UNIQUE (name),
    CONSTRAINT service_keys_hash_key UNIQUE (key_hash)
);
