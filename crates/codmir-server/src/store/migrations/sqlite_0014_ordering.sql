-- Ordered delivery per resource (a webhook's `ordering`): a delivery of such a webhook is in
-- its resource's chain (`chain_resource`, and its event's `chain_sequence` there) and waits,
-- pending and not due, while an earlier one of the chain is pending. `chains` has one row per
-- (webhook, resource) whose lock makes the fan-out (join the chain) and a settlement (let the
-- next go) take turns.
ALTER TABLE webhooks ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
ALTER TABLE deliveries ADD COLUMN chain_resource TEXT;
ALTER TABLE deliveries ADD COLUMN chain_sequence BIGINT;
-- Only chained deliveries not settled: nothing for the unordered ones to write.
CREATE INDEX deliveries_chain ON deliveries (webhook_id, chain_resource, chain_sequence)
    WHERE chain_resource IS NOT NULL AND status = 'pending';
CREATE TABLE chains (
    webhook_id TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    touched_at BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, resource_id)
);
-- The fan-out's cache reads `ordering`: a change to it bumps the workspace's version.
DROP TRIGGER webhooks_version_update;
CREATE TRIGGER webhooks_version_update AFTER UPDATE OF workspace_id, url, events, project_ids,
    description, secret, enabled, disabled_reason, disabled_at, max_in_flight,
    rate_limit_per_second, headers, previous_secret, previous_secret_until, ordering ON webhooks BEGIN
    UPDATE workspaces SET webhooks_version = webhooks_version + 1
    WHERE id IN (OLD.workspace_id, NEW.workspace_id);
END;
