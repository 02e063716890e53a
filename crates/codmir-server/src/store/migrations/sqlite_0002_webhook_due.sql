-- Due deliveries by webhook: claims that leave out busy webhooks probe the others one by one
-- instead of scanning past every delivery of the busy ones.
CREATE INDEX deliveries_webhook_due ON deliveries(webhook_id, next_attempt_at) WHERE status = 'pending';
