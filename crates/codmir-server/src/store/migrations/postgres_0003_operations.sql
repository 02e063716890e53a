-- Operations: why a delivery failed on its row, redeliveries, automatic disabling, secret
-- rotation, per-webhook limits and headers, and the indexes the new queries use.
ALTER TABLE deliveries
    ADD COLUMN redelivery_of TEXT,
    ADD COLUMN last_attempt_at BIGINT,
    ADD COLUMN last_status_code INTEGER,
    ADD COLUMN last_error TEXT;
CREATE INDEX deliveries_workspace ON deliveries(workspace_id, id);
-- The deliveries of an event: what a webhook already has of it (replays), and whether an old
-- event is still needed (retention).
CREATE INDEX deliveries_event ON deliveries(event_id);

ALTER TABLE webhooks
    ADD COLUMN disabled_reason TEXT,
    ADD COLUMN disabled_at BIGINT,
    -- When the current run of failed deliveries began, and how long it is (automatic disabling).
    ADD COLUMN failing_since BIGINT,
    ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN max_in_flight INTEGER,
    ADD COLUMN rate_limit_per_second INTEGER,
    ADD COLUMN headers TEXT NOT NULL DEFAULT '{}', -- JSON object
    -- During a rotation's grace period: the secret being replaced, and until when it signs too.
    ADD COLUMN previous_secret TEXT,
    ADD COLUMN previous_secret_until BIGINT;

CREATE INDEX events_workspace_created ON events(workspace_id, created_at);
