-- Service keys (issue 18): credentials for programs that publish into
-- rooms as a bot user. Only the key's SHA-256 is kept (see
-- roomcast-storage's service_keys.rs for why not argon2); the key itself
-- is shown once, when made.
CREATE TABLE service_keys (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    -- SHA-256 of the whole key (`rk_...`), lowercase hex.
    key_hash    TEXT NOT NULL,
    -- Scope names separated by spaces (`publish`, `read`).
    scopes      TEXT NOT NULL,
    -- The account the key acts as: messages it posts are this user's.
    bot_user_id BLOB NOT NULL REFERENCES users (id),
    created_at  INTEGER NOT NULL,
    -- Set once, when revoked; a revoked key is refused and never live again.
    revoked_at  INTEGER,
    CONSTRAINT service_keys_name_key UNIQUE (name),
    CONSTRAINT service_keys_hash_key UNIQUE (key_hash)
);
