-- Idempotency-Key: the first answer to a POST made with a key, replayed to a retry with the
-- same key and request for 24 hours. `status` is NULL while the first request runs.
CREATE TABLE idempotency_keys (
    workspace_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  BYTEA NOT NULL,
    status       BIGINT,
    body         TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys(workspace_id, created_at);
