-- Incoming calls (SR-03): VICIdial may name the agent's phone (extension or phone login)
-- instead of the agent's user. An administrator maps each extension to a Herald user, so
-- the ringing push reaches the operator sitting at that phone.

CREATE TABLE cti_extensions (
    extension  text PRIMARY KEY CHECK (extension ~ '^[A-Za-z0-9][A-Za-z0-9._/@-]{0,63}$'),
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);
CREATE INDEX cti_extensions_user_idx ON cti_extensions (user_id);
