-- Operations: why a delivery failed on its row, redeliveries, automatic disabling, secret
-- rotation, per-webhook limits and headers, and the indexes the new queries use.
ALTER TABLE deliveries ADD COLUMN redelivery_of TEXT;
ALTER TABLE deliveries ADD COLUMN last_attempt_at INTEGER;
ALTER TABLE deliveries ADD COLUMN last_status_code INTEGER;
ALTER TABLE deliveries ADD COLUMN last_error TEXT;
CREATE INDEX deliveries_workspace ON deliveries(workspace_id, id);
-- The deliveries of an event: what a webhook already has of it (replays), and whether an old
-- event is still needed (retention).
CREATE INDEX deliveries_event ON deliveries(event_id);

ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
ALTER TABLE webhooks ADD COLUMN disabled_at INTEGER;
-- When the current run of failed deliveries began, and how long it is (automatic disabling).
ALTER TABLE webhooks ADD COLUMN failing_since INTEGER;
ALTER TABLE webhooks ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN max_in_flight INTEGER;
ALTER TABLE webhooks ADD COLUMN rate_limit_per_second INTEGER;
ALTER TABLE webhooks ADD COLUMN headers TEXT NOT NULL DEFAULT '{}'; -- JSON object
-- During a rotation's grace period: the secret being replaced, and until when it signs too.
ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_until INTEGER;

CREATE INDEX events_workspace_created ON events(workspace_id, created_at);
