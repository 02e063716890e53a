-- API keys: when each was last used (set at most once per key-cache period per node, so that
-- `codmir keys list` can tell a forgotten key from a busy one, and `serve` can tell that
-- nobody ever used the key it printed) and when it was revoked.
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
